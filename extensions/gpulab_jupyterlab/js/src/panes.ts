/**
 * Dask dashboard plots as JupyterLab main-area panes: an `IFrame` on one of the
 * dashboard's `individual-*` pages, as dask-labextension shows them (without its
 * server extension, which would start clusters outside gpulab's quota).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';

import { serverUrl } from './requestAPI';
import { ICluster } from './types';

/** The plots the sidebar offers, by their dashboard path. */
export const DASHBOARD_PANES: { path: string; label: string }[] = [
  { path: 'individual-task-stream', label: 'Task stream' },
  { path: 'individual-progress', label: 'Progress' },
  { path: 'individual-workers-memory', label: 'Workers memory' },
  { path: 'individual-nprocessing', label: 'Tasks processing' },
  { path: 'individual-cpu', label: 'CPU' },
  { path: 'individual-gpu-utilization', label: 'GPU utilisation' },
  { path: 'individual-gpu-memory', label: 'GPU memory' }
];

/**
 * The dashboard's base path from its status link: "proxy/8787/status" ->
 * "proxy/8787/". Null when the cluster has no dashboard.
 */
export function dashboardBase(link: string | null): string | null {
  if (!link) {
    return null;
  }
  const path = link.split(/[?#]/)[0];
  if (/(^|\/)status\/?$/.test(path)) {
    return path.replace(/status\/?$/, '');
  }
  return path.endsWith('/') ? path : `${path}/`;
}

/** The absolute URL of one plot of a cluster's dashboard, or null without one. */
export function paneUrl(cluster: ICluster, plot: string): string | null {
  const base = dashboardBase(cluster.dashboard_link);
  return base === null ? null : serverUrl(`${base}${plot}`);
}

/** Open (or bring forward) a plot of a cluster's dashboard in the main area. */
export function openPane(app: JupyterFrontEnd, cluster: ICluster, plot: string): boolean {
  const url = paneUrl(cluster, plot);
  if (url === null) {
    return false;
  }
  const id = `gpulab-dask-${cluster.id}-${plot}`.replace(/[^A-Za-z0-9_-]/g, '-');
  for (const widget of app.shell.widgets('main')) {
    if (widget.id === id) {
      app.shell.activateById(id);
      return true;
    }
  }
  const iframe = new IFrame({
    sandbox: ['allow-scripts', 'allow-same-origin', 'allow-popups'],
    referrerPolicy: 'same-origin'
  });
  iframe.url = url;
  const widget = new MainAreaWidget({ content: iframe });
  const label = DASHBOARD_PANES.find(p => p.path === plot)?.label ?? plot;
  widget.id = id;
  widget.addClass('gpulab-DaskPane');
  widget.node.dataset.testid = 'gpulab-dask-pane';
  widget.node.dataset.clusterId = cluster.id;
  widget.node.dataset.plot = plot;
  widget.title.label = `Dask ${label} (${cluster.name})`;
  widget.title.caption = url;
  widget.title.closable = true;
  app.shell.add(widget, 'main', { mode: 'split-right' });
  app.shell.activateById(id);
  return true;
}
