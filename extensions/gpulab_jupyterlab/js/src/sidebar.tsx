/**
 * gpulab's sidebar (left area, id `gpulab-sidebar`): the allocation card and the
 * clusters list, kept fresh by `GpulabModel`'s poll while the sidebar shows.
 *
 * Stable hooks for browser tests (`data-testid` unless said otherwise):
 *
 * Sidebar        #gpulab-sidebar (widget id, class gpulab-Sidebar), gpulab-sidebar,
 *                gpulab-error (a refused create/scale/stop: the server's message;
 *                data-field names the field it refused, if any), gpulab-error-message
 *                (the message alone), gpulab-error-dismiss.
 *                API requests carry a cache-busting query (`gpulab/clusters?1712...`):
 *                match routes with a trailing `*`.
 * Allocation     gpulab-allocation, gpulab-allocation-error, gpulab-server,
 *                gpulab-gpus, gpulab-gpu (one per GPU, data-gpu-id), gpulab-gpu-name,
 *                gpulab-gpu-util (role=progressbar, aria-valuenow = percent),
 *                gpulab-gpu-util-text, gpulab-gpu-memory, gpulab-gpu-memory-bar,
 *                gpulab-no-gpus ("No GPUs: CPU session"),
 *                gpulab-no-quota ("No quota information (not running under gpulab's hub)"),
 *                gpulab-quota, gpulab-quota-hours ("used / limit"), gpulab-quota-meter,
 *                gpulab-quota-left, gpulab-session-left, gpulab-quota-warning (each),
 *                gpulab-dask-workers ("in use / limit")
 * Clusters       gpulab-clusters (section), gpulab-new-cluster (button),
 *                gpulab-clusters-error, gpulab-no-clusters, gpulab-cluster-list,
 *                gpulab-cluster (each; data-cluster-id, data-status), gpulab-cluster-name,
 *                gpulab-cluster-status, gpulab-cluster-progress (while starting:
 *                "ready / requested workers ready"), gpulab-cluster-error,
 *                gpulab-cluster-workers (<details>), gpulab-cluster-workers-count
 *                (<summary>), gpulab-cluster-worker (each), gpulab-cluster-dashboard
 *                (<a target=_blank>), gpulab-cluster-pane-kind (<select>),
 *                gpulab-cluster-open-pane, gpulab-cluster-scale-input,
 *                gpulab-cluster-scale, gpulab-cluster-insert-code (disabled without an
 *                active notebook), gpulab-cluster-stop (asks for confirmation),
 *                gpulab-cluster-dismiss (failed or stopped clusters: DELETE at once)
 * New cluster    gpulab-new-cluster-form, gpulab-form-name, gpulab-form-workers,
 *                gpulab-form-threads, gpulab-form-gpus (only with GPUs),
 *                gpulab-form-memory, gpulab-form-rmm (only with 1 GPU per worker),
 *                gpulab-form-protocol, gpulab-form-error; the dialog's buttons are
 *                JupyterLab's (.jp-Dialog .jp-mod-accept "Start", .jp-mod-reject "Cancel")
 * Dask panes     main-area widget id gpulab-dask-<clusterId>-<plot>, class
 *                gpulab-DaskPane, data-testid gpulab-dask-pane, data-cluster-id, data-plot
 * Launcher       the card "gpulab cluster" (command gpulab:new-cluster)
 * Runs           gpulab-runs (section), gpulab-runs-error, gpulab-no-runs,
 *                gpulab-run-list, gpulab-run (each; data-run-id, data-owner,
 *                data-status), gpulab-run-name, gpulab-run-owner (runs shared with
 *                the user: "shared by NAME"), gpulab-run-status, gpulab-run-step,
 *                gpulab-run-open (<a target=_blank>: the run on the hub's dashboards
 *                service), gpulab-run-share (the user's own runs only)
 * Share dialog   gpulab-share-dialog, gpulab-share-error (data-field), gpulab-share-users-input,
 *                gpulab-share-groups-input, gpulab-share-add, gpulab-share-nobody,
 *                gpulab-share-user / gpulab-share-group (each; data-name),
 *                gpulab-share-remove (each), gpulab-links-off (links turned off),
 *                gpulab-link-expiry (<select>, seconds), gpulab-link-create,
 *                gpulab-link-new (<input readonly>: the new link, shown once),
 *                gpulab-link (each; data-link-id, data-active), gpulab-link-revoke;
 *                closed by JupyterLab's .jp-Dialog .jp-mod-accept ("Done")
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { AllocationCard } from './allocation';
import { ClustersList, IClusterActions } from './clusters';
import { gpuIcon } from './icons';
import { GpulabModel } from './model';
import { askNewCluster } from './newClusterDialog';
import { insertClientCode } from './notebook';
import { openPane } from './panes';
import { ICluster } from './types';
import { RunsSection, showShareDialog } from './runs';
import { RunsModel } from './runsModel';

export const SIDEBAR_ID = 'gpulab-sidebar';

function SidebarView(props: {
  model: GpulabModel;
  actions: IClusterActions;
  onNewCluster: () => void;
  runs: RunsModel;
}): JSX.Element {
  const { model, actions, onNewCluster, runs } = props;
  return (
    <div className="gpulab-Sidebar-body" data-testid="gpulab-sidebar">
      <header className="gpulab-Sidebar-header">
        <h2>gpulab</h2>
      </header>
      <AllocationCard
        allocation={model.allocation}
        error={model.allocationError}
        loading={model.loading}
      />
      <section className="gpulab-Card gpulab-Clusters" data-testid="gpulab-clusters">
        <div className="gpulab-Card-titlebar">
          <h3 className="gpulab-Card-title">Dask clusters</h3>
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-accept gpulab-Button"
            data-testid="gpulab-new-cluster"
            disabled={model.creating}
            onClick={onNewCluster}
          >
            {model.creating ? 'Starting…' : 'New cluster'}
          </button>
        </div>
        {model.actionError !== null && (
          <div
            className="gpulab-Error gpulab-ActionError"
            data-testid="gpulab-error"
            data-field={model.actionField ?? undefined}
            role="alert"
          >
            <span data-testid="gpulab-error-message">{model.actionError}</span>
            <button
              type="button"
              className="gpulab-Dismiss"
              aria-label="Dismiss"
              data-testid="gpulab-error-dismiss"
              onClick={() => model.dismissError()}
            >
              ×
            </button>
          </div>
        )}
        <ClustersList
          clusters={model.clusters}
          error={model.clustersError}
          loading={model.loading}
          actions={actions}
        />
      </section>
      <UseSignal signal={runs.changed}>
        {() => <RunsSection model={runs} onShare={run => void showShareDialog(runs, run)} />}
      </UseSignal>
    </div>
  );
}

export class GpulabSidebar extends ReactWidget {
  constructor(
    private _app: JupyterFrontEnd,
    private _tracker: INotebookTracker | null
  ) {
    super();
    this.id = SIDEBAR_ID;
    this.addClass('gpulab-Sidebar');
    this.title.icon = gpuIcon;
    this.title.caption = 'gpulab: GPUs, quota and Dask clusters';
    this.model = new GpulabModel();
    this.runs = new RunsModel();
    this._tracker?.currentChanged.connect(this._onNotebookChanged, this);
  }

  readonly model: GpulabModel;
  /** The runs list (its own poll: runs change at another pace than clusters). */
  readonly runs: RunsModel;

  /** Open the New cluster dialog and start what it asks for. */
  async newCluster(): Promise<ICluster | null> {
    const allocation = this.model.allocation;
    const spec = await askNewCluster({
      hasGpus: (allocation?.gpus.length ?? 0) > 0,
      workerLimit: allocation?.dask_workers.limit ?? null,
      workersInUse: allocation?.dask_workers.in_use ?? 0
    });
    return spec === null ? null : this.model.create(spec);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._tracker?.currentChanged.disconnect(this._onNotebookChanged, this);
    this.model.dispose();
    this.runs.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.startPolling();
    this.runs.startPolling();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.stopPolling();
    this.runs.stopPolling();
  }

  protected render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <SidebarView
            model={this.model}
            actions={this._actions()}
            onNewCluster={() => void this.newCluster()}
            runs={this.runs}
          />
        )}
      </UseSignal>
    );
  }

  private _actions(): IClusterActions {
    return {
      canInsertCode: !!this._tracker?.currentWidget,
      isPending: id => this.model.isPending(id),
      openPane: (cluster, plot) => {
        openPane(this._app, cluster, plot);
      },
      scale: (cluster, workers) => {
        void this.model.scale(cluster.id, workers);
      },
      stop: cluster => void this._confirmStop(cluster),
      dismiss: cluster => {
        void this.model.stop(cluster.id);
      },
      insertCode: cluster => {
        if (insertClientCode(this._tracker, cluster.id) && this._tracker?.currentWidget) {
          this._app.shell.activateById(this._tracker.currentWidget.id);
        }
      }
    };
  }

  private async _confirmStop(cluster: ICluster): Promise<void> {
    const count = cluster.workers.length;
    const result = await showDialog({
      title: 'Stop cluster',
      body: `Stop cluster "${cluster.name}" (${cluster.id}) and its ${count} worker${count === 1 ? '' : 's'}? Clients connected to it lose their work in progress.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
    });
    if (result.button.accept) {
      await this.model.stop(cluster.id);
    }
  }

  private _onNotebookChanged(): void {
    this.update();
  }
}
