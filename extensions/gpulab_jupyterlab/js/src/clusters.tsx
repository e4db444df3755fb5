/**
 * The clusters list: each cluster's name, status (with workers ready / requested
 * while starting), workers, dashboard link, dashboard panes, scale, stop and
 * "insert client code". Actions go through `IClusterActions`; this module holds
 * no server calls. Server text is rendered as React text.
 */
import * as React from 'react';

import { formatBytes } from './format';
import { DASHBOARD_PANES, dashboardBase } from './panes';
import { serverUrl } from './requestAPI';
import { ICluster } from './types';

/** What the list asks its owner to do. */
export interface IClusterActions {
  openPane(cluster: ICluster, plot: string): void;
  scale(cluster: ICluster, workers: number): void;
  stop(cluster: ICluster): void;
  /** Forget a failed or stopped cluster (DELETE, no confirmation: nothing runs). */
  dismiss(cluster: ICluster): void;
  insertCode(cluster: ICluster): void;
  /** Whether a notebook is active to insert client code into. */
  canInsertCode: boolean;
  isPending(id: string): boolean;
}

const ACTIVE = new Set(['starting', 'running']);

function StatusLine({ cluster }: { cluster: ICluster }): JSX.Element {
  const ready = cluster.workers.length;
  const requested = cluster.workers_requested;
  return (
    <div className="gpulab-Cluster-statusline">
      <span
        className={`gpulab-Status gpulab-Status-${cluster.status}`}
        data-testid="gpulab-cluster-status"
      >
        {cluster.status}
      </span>
      {cluster.status === 'starting' && (
        <span className="gpulab-Cluster-progress" data-testid="gpulab-cluster-progress">
          <progress value={ready} max={Math.max(requested, 1)} />
          <span>
            {ready} / {requested} workers ready
          </span>
        </span>
      )}
    </div>
  );
}

function Workers({ cluster }: { cluster: ICluster }): JSX.Element {
  const count = cluster.workers.length;
  return (
    <details className="gpulab-Cluster-workers" data-testid="gpulab-cluster-workers">
      <summary data-testid="gpulab-cluster-workers-count">
        {count} / {cluster.workers_requested} worker{cluster.workers_requested === 1 ? '' : 's'}
        {cluster.gpus.length > 0 ? ` · GPUs ${cluster.gpus.join(', ')}` : ''}
      </summary>
      {count === 0 ? (
        <p className="gpulab-Note">No workers yet.</p>
      ) : (
        <ul>
          {cluster.workers.map(worker => (
            <li
              key={worker.name || worker.address}
              className="gpulab-Worker"
              data-testid="gpulab-cluster-worker"
            >
              <span className="gpulab-Worker-name">{worker.name}</span>{' '}
              <span className="gpulab-Worker-detail">
                {worker.nthreads} thread{worker.nthreads === 1 ? '' : 's'},{' '}
                {formatBytes(worker.memory_limit)}
                {worker.device ? `, GPU ${worker.device}` : ''}
              </span>
              <div className="gpulab-Worker-address">{worker.address}</div>
            </li>
          ))}
        </ul>
      )}
    </details>
  );
}

function Panes(props: { cluster: ICluster; actions: IClusterActions }): JSX.Element | null {
  const { cluster, actions } = props;
  const panes = DASHBOARD_PANES.filter(
    pane => cluster.gpus.length > 0 || !pane.path.startsWith('individual-gpu')
  );
  const [plot, setPlot] = React.useState(panes[0].path);
  const dashboard = serverUrl(cluster.dashboard_link);
  if (dashboard === null || dashboardBase(cluster.dashboard_link) === null) {
    return null;
  }
  return (
    <div className="gpulab-Cluster-dashboard">
      <a
        href={dashboard}
        target="_blank"
        rel="noopener noreferrer"
        className="gpulab-Link"
        data-testid="gpulab-cluster-dashboard"
        title="Open the Dask dashboard in a new browser tab"
      >
        Dashboard ↗
      </a>
      <select
        className="gpulab-Select"
        aria-label="Dashboard plot"
        data-testid="gpulab-cluster-pane-kind"
        value={plot}
        onChange={event => setPlot(event.target.value)}
      >
        {panes.map(pane => (
          <option key={pane.path} value={pane.path}>
            {pane.label}
          </option>
        ))}
      </select>
      <button
        type="button"
        className="jp-Button jp-mod-styled jp-mod-reject gpulab-Button"
        data-testid="gpulab-cluster-open-pane"
        title="Open this plot in a JupyterLab pane"
        onClick={() => actions.openPane(cluster, plot)}
      >
        Open pane
      </button>
    </div>
  );
}

function Scale(props: { cluster: ICluster; actions: IClusterActions }): JSX.Element {
  const { cluster, actions } = props;
  const [draft, setDraft] = React.useState<string | null>(null);
  const value = draft ?? String(cluster.workers_requested);
  const workers = Number(value);
  const valid =
    value.trim() !== '' && Number.isInteger(workers) && workers >= 0 && workers <= 512;
  const pending = actions.isPending(cluster.id);
  const submit = (): void => {
    if (valid && !pending) {
      actions.scale(cluster, workers);
      setDraft(null);
    }
  };
  return (
    <form
      className="gpulab-Cluster-scale"
      onSubmit={event => {
        event.preventDefault();
        submit();
      }}
    >
      <input
        type="number"
        min={0}
        step={1}
        className="jp-mod-styled gpulab-Input gpulab-Input-small"
        aria-label="Workers"
        aria-invalid={!valid}
        data-testid="gpulab-cluster-scale-input"
        value={value}
        onChange={event => setDraft(event.target.value)}
      />
      <button
        type="submit"
        className="jp-Button jp-mod-styled jp-mod-reject gpulab-Button"
        data-testid="gpulab-cluster-scale"
        disabled={!valid || pending}
        title={valid ? 'Ask for this many workers' : 'A whole number of workers, 0 to 512'}
      >
        Scale
      </button>
    </form>
  );
}

export function ClusterItem(props: {
  cluster: ICluster;
  actions: IClusterActions;
}): JSX.Element {
  const { cluster, actions } = props;
  const active = ACTIVE.has(cluster.status);
  const pending = actions.isPending(cluster.id);
  const insertTitle = actions.canInsertCode
    ? 'Insert a cell that connects a Dask client to this cluster'
    : 'Open a notebook to insert client code';
  return (
    <li
      className={`gpulab-Cluster gpulab-Cluster-${cluster.status}`}
      data-testid="gpulab-cluster"
      data-cluster-id={cluster.id}
      data-status={cluster.status}
      aria-busy={pending}
    >
      <div className="gpulab-Cluster-head">
        <span className="gpulab-Cluster-name" data-testid="gpulab-cluster-name">
          {cluster.name}
        </span>
        <span className="gpulab-Cluster-id" title={`owned by ${cluster.owner.kind} ${cluster.owner.pid}`}>
          {cluster.id}
        </span>
      </div>
      <StatusLine cluster={cluster} />
      {cluster.error && (
        <p className="gpulab-Error" data-testid="gpulab-cluster-error">
          {cluster.error}
        </p>
      )}
      <Workers cluster={cluster} />
      {active && <Panes cluster={cluster} actions={actions} />}
      {active && (
        <div className="gpulab-Cluster-actions">
          <Scale cluster={cluster} actions={actions} />
          <span title={insertTitle} className="gpulab-Tooltip">
            <button
              type="button"
              className="jp-Button jp-mod-styled jp-mod-reject gpulab-Button"
              data-testid="gpulab-cluster-insert-code"
              disabled={!actions.canInsertCode}
              title={insertTitle}
              onClick={() => actions.insertCode(cluster)}
            >
              Insert client code
            </button>
          </span>
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-warn gpulab-Button"
            data-testid="gpulab-cluster-stop"
            disabled={pending}
            title="Stop this cluster and its workers"
            onClick={() => actions.stop(cluster)}
          >
            Stop
          </button>
        </div>
      )}
      {(cluster.status === 'failed' || cluster.status === 'stopped') && (
        <div className="gpulab-Cluster-actions">
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-reject gpulab-Button"
            data-testid="gpulab-cluster-dismiss"
            disabled={pending}
            title="Remove this cluster from the list"
            onClick={() => actions.dismiss(cluster)}
          >
            Dismiss
          </button>
        </div>
      )}
    </li>
  );
}

export function ClustersList(props: {
  clusters: ICluster[];
  error: string | null;
  loading: boolean;
  actions: IClusterActions;
}): JSX.Element {
  const { clusters, error, loading, actions } = props;
  return (
    <div className="gpulab-Clusters-body">
      {error !== null && (
        <p className="gpulab-Error" data-testid="gpulab-clusters-error" role="alert">
          {error}
        </p>
      )}
      {clusters.length === 0 ? (
        !loading &&
        error === null && (
          <p className="gpulab-Note" data-testid="gpulab-no-clusters">
            No clusters yet.
          </p>
        )
      ) : (
        <ul className="gpulab-ClusterList" data-testid="gpulab-cluster-list">
          {clusters.map(cluster => (
            <ClusterItem key={cluster.id} cluster={cluster} actions={actions} />
          ))}
        </ul>
      )}
    </div>
  );
}
