/**
 * The allocation card: this server's GPUs with live memory and utilisation, the
 * GPU-hour meter, session time left, quota warnings and Dask workers in use.
 * All text from the server is rendered as React text (escaped).
 */
import * as React from 'react';

import { clampPct, formatDuration, formatHours, formatMiB } from './format';
import { IAllocation, IGpu, IQuota } from './types';

/** A horizontal bar for a percentage; `null` draws an empty bar marked "n/a". */
export function Bar(props: {
  pct: number | null;
  label: string;
  testid: string;
  warn?: boolean;
}): JSX.Element {
  const pct = clampPct(props.pct);
  const className =
    'gpulab-Bar' + (props.warn || (pct !== null && pct >= 90) ? ' gpulab-mod-warn' : '');
  return (
    <div
      className={className}
      data-testid={props.testid}
      role="progressbar"
      aria-label={props.label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={pct === null ? undefined : Math.round(pct)}
      title={props.label}
    >
      <div className="gpulab-Bar-fill" style={{ width: `${pct ?? 0}%` }} />
    </div>
  );
}

function GpuRow({ gpu }: { gpu: IGpu }): JSX.Element {
  const util = gpu.utilization_pct;
  const memoryPct =
    gpu.memory_total_mib && gpu.memory_used_mib !== null
      ? (100 * gpu.memory_used_mib) / gpu.memory_total_mib
      : null;
  return (
    <li className="gpulab-Gpu" data-testid="gpulab-gpu" data-gpu-id={gpu.id}>
      <div className="gpulab-Gpu-head">
        <span className="gpulab-Gpu-name" data-testid="gpulab-gpu-name">
          {gpu.name}
        </span>
        <span className="gpulab-Gpu-id">{gpu.id}</span>
      </div>
      <div className="gpulab-Row">
        <span className="gpulab-Row-label">Utilisation</span>
        <span className="gpulab-Row-value" data-testid="gpulab-gpu-util-text">
          {util === null ? 'n/a' : `${Math.round(util)} %`}
        </span>
      </div>
      <Bar pct={util} label={`GPU ${gpu.id} utilisation`} testid="gpulab-gpu-util" />
      <div className="gpulab-Row">
        <span className="gpulab-Row-label">Memory</span>
        <span className="gpulab-Row-value" data-testid="gpulab-gpu-memory">
          {formatMiB(gpu.memory_used_mib)} / {formatMiB(gpu.memory_total_mib)}
        </span>
      </div>
      <Bar pct={memoryPct} label={`GPU ${gpu.id} memory`} testid="gpulab-gpu-memory-bar" />
    </li>
  );
}

function QuotaSection(props: {
  quota: IQuota | null;
  error: string | null | undefined;
}): JSX.Element {
  const { quota, error } = props;
  if (quota === null && error) {
    return (
      <p className="gpulab-Error" data-testid="gpulab-quota-error">
        {error}
      </p>
    );
  }
  if (quota === null) {
    return (
      <p className="gpulab-Note" data-testid="gpulab-no-quota">
        No quota information (not running under gpulab's hub)
      </p>
    );
  }
  const limit = quota.gpu_hours_limit;
  const usedPct = limit ? (100 * quota.gpu_hours_used) / limit : null;
  return (
    <div className="gpulab-Quota" data-testid="gpulab-quota">
      <div className="gpulab-Row">
        <span className="gpulab-Row-label">GPU-hours</span>
        <span className="gpulab-Row-value" data-testid="gpulab-quota-hours">
          {formatHours(quota.gpu_hours_used)} /{' '}
          {limit === null ? 'no limit' : formatHours(limit)}
        </span>
      </div>
      {limit !== null && (
        <Bar pct={usedPct} label="GPU-hours used" testid="gpulab-quota-meter" />
      )}
      {quota.gpu_hours_left !== null && (
        <div className="gpulab-Row">
          <span className="gpulab-Row-label">
            Left{quota.window ? ` (${quota.window} window)` : ''}
          </span>
          <span className="gpulab-Row-value" data-testid="gpulab-quota-left">
            {formatHours(quota.gpu_hours_left)} h
          </span>
        </div>
      )}
      <div className="gpulab-Row">
        <span className="gpulab-Row-label">Session time left</span>
        <span className="gpulab-Row-value" data-testid="gpulab-session-left">
          {quota.session_seconds_left === null
            ? 'no limit'
            : formatDuration(quota.session_seconds_left)}
        </span>
      </div>
      {(quota.warnings ?? []).length > 0 && (
        <ul className="gpulab-Warnings">
          {quota.warnings.map((warning, i) => (
            <li key={i} className="gpulab-Warning" data-testid="gpulab-quota-warning">
              {warning}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function AllocationCard(props: {
  allocation: IAllocation | null;
  error: string | null;
  loading: boolean;
}): JSX.Element {
  const { allocation, error, loading } = props;
  return (
    <section className="gpulab-Card gpulab-Allocation" data-testid="gpulab-allocation">
      <h3 className="gpulab-Card-title">Allocation</h3>
      {error !== null && (
        <p className="gpulab-Error" data-testid="gpulab-allocation-error" role="alert">
          {error}
        </p>
      )}
      {allocation === null ? (
        loading && <p className="gpulab-Note">Loading…</p>
      ) : (
        <>
          <div className="gpulab-Row">
            <span className="gpulab-Row-label">Server</span>
            <span className="gpulab-Row-value" data-testid="gpulab-server">
              {allocation.user}
              {allocation.server ? ` / ${allocation.server}` : ''}
            </span>
          </div>
          {allocation.gpus.length === 0 ? (
            <p className="gpulab-Note" data-testid="gpulab-no-gpus">
              No GPUs: CPU session
            </p>
          ) : (
            <ul className="gpulab-Gpus" data-testid="gpulab-gpus">
              {allocation.gpus.map(gpu => (
                <GpuRow key={gpu.id} gpu={gpu} />
              ))}
            </ul>
          )}
          <QuotaSection quota={allocation.quota} error={allocation.quota_error} />
          <div className="gpulab-Row">
            <span className="gpulab-Row-label">Dask workers</span>
            <span className="gpulab-Row-value" data-testid="gpulab-dask-workers">
              {allocation.dask_workers.in_use ?? 'n/a'} /{' '}
              {allocation.dask_workers.limit === null
                ? 'no limit'
                : allocation.dask_workers.limit}
            </span>
          </div>
        </>
      )}
    </section>
  );
}
