/** Numbers as a person reads them in the sidebar. */

/** 1536 MiB -> "1.5 GiB"; null -> "n/a". */
export function formatMiB(mib: number | null | undefined): string {
  if (mib === null || mib === undefined || !Number.isFinite(mib)) {
    return 'n/a';
  }
  if (mib >= 1024) {
    return `${(mib / 1024).toFixed(1)} GiB`;
  }
  return `${Math.round(mib)} MiB`;
}

/** Bytes -> "4.0 GiB"; 0 or less means no limit. */
export function formatBytes(bytes: number | null | undefined): string {
  if (!bytes || bytes <= 0 || !Number.isFinite(bytes)) {
    return 'no limit';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** GPU-hours with one decimal ("3.2"). */
export function formatHours(hours: number | null | undefined): string {
  if (hours === null || hours === undefined || !Number.isFinite(hours)) {
    return 'n/a';
  }
  return (Math.round(hours * 10) / 10).toFixed(1);
}

/** Seconds -> "2 h 05 min", "4 min", "30 s". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return 'n/a';
  }
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (hours > 0) {
    return `${hours} h ${String(minutes).padStart(2, '0')} min`;
  }
  if (minutes > 0) {
    return `${minutes} min`;
  }
  return `${s} s`;
}

/** A percentage clamped to 0..100 (for bars), or null. */
export function clampPct(pct: number | null | undefined): number | null {
  if (pct === null || pct === undefined || !Number.isFinite(pct)) {
    return null;
  }
  return Math.min(100, Math.max(0, pct));
}
