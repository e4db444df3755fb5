/**
 * The JSON shapes of gpulab's REST API (`<baseUrl>/gpulab/...`), as the server
 * extension sends them. Keep in step with the handlers in `gpulab_jupyterlab`.
 */

/** One GPU of this server's allocation. Live figures are null where NVML has none. */
export interface IGpu {
  id: string;
  name: string;
  memory_total_mib: number | null;
  memory_used_mib: number | null;
  utilization_pct: number | null;
  power_watts?: number | null;
}

/** The user's quota as the hub's quota service reports it. */
export interface IQuota {
  gpu_hours_used: number;
  /** null: no GPU-hour limit. */
  gpu_hours_limit: number | null;
  gpu_hours_left: number | null;
  /** The rolling window the GPU-hours count over, e.g. "7d"; null without one. */
  window: string | null;
  /** null: no session length limit. */
  session_seconds_left: number | null;
  warnings: string[];
}

/** `GET gpulab/allocation` */
export interface IAllocation {
  user: string;
  server: string;
  gpus: IGpu[];
  /** null when the server does not run under gpulab's hub. */
  quota: IQuota | null;
  /** Why the quota could not be read (the hub's quota service failed), if it could not. */
  quota_error?: string | null;
  /** null: no limit; in_use null: not known. */
  dask_workers: { limit: number | null; in_use: number | null };
}

export type ClusterStatus =
  | 'starting'
  | 'running'
  | 'stopping'
  | 'stopped'
  | 'failed';

export interface IClusterWorker {
  name: string;
  address: string;
  nthreads: number;
  /** bytes; 0 when unlimited */
  memory_limit: number;
  device: string | null;
}

/** One Dask cluster bound to this server's allocation. */
export interface ICluster {
  id: string;
  name: string;
  status: ClusterStatus;
  error: string | null;
  /** ISO 8601 */
  created: string;
  owner: { kind: 'server' | 'kernel' | 'process' | 'gateway'; pid: number | null };
  workers_requested: number;
  workers: IClusterWorker[];
  gpus: string[];
  scheduler_address?: string | null;
  /** Relative to the server's base URL, e.g. "proxy/8787/status". */
  dashboard_link: string | null;
  spec: { [key: string]: unknown };
}

/** `GET gpulab/clusters` */
export interface IClusterList {
  clusters: ICluster[];
}

export type Protocol = 'tls' | 'tcp' | 'ucx';

/** `POST gpulab/clusters`: absent fields take the server's defaults. */
export interface INewCluster {
  name?: string;
  workers: number;
  threads_per_worker?: number;
  memory_limit?: string | null;
  gpus_per_worker?: 0 | 1;
  rmm_pool_size?: string | null;
  device_memory_limit?: string | null;
  protocol?: Protocol;
}

/** The body of a 4xx answer. */
export interface IErrorBody {
  message: string;
  field?: string;
  reason?: string;
  limit?: number;
  in_use?: number;
}

export type RunStatus = 'created' | 'running' | 'finished' | 'failed';

/** One run in `GET gpulab/runs`: the user's own (`mine`) or shared with them. */
export interface IRun {
  id: string;
  /** As its owner typed it: render as text. */
  name: string;
  status: RunStatus;
  /** ISO 8601 */
  created: string;
  /** The last step rank 0 logged; null before the first. */
  step: number | null;
  owner: string;
  mine: boolean;
  /** The run on the hub's dashboards service (a path on the hub, or an absolute URL). */
  dashboard_url: string;
}

/** `GET gpulab/runs` */
export interface IRunList {
  user: string;
  links_allowed: boolean;
  runs: IRun[];
}

/** A view-only link, as the owner sees it (never its token, but once at creation). */
export interface IRunLink {
  id: string;
  created: string;
  expires: string;
  revoked: string | null;
  active: boolean;
}

/** `POST gpulab/runs/OWNER/ID/links`: the link with its token and URL, this once. */
export interface INewRunLink extends IRunLink {
  token: string;
  url: string;
}

/** `GET`/`PATCH gpulab/runs/OWNER/ID/acl` */
export interface IRunAcl {
  owner: string;
  users: string[];
  groups: string[];
  links: IRunLink[];
  links_allowed: boolean;
}

/** `PATCH gpulab/runs/OWNER/ID/acl` */
export interface IAclChange {
  share?: { users?: string[]; groups?: string[] };
  unshare?: { users?: string[]; groups?: string[] };
}
