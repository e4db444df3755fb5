/**
 * The sidebar's state: the allocation and the clusters as last fetched, the errors
 * to show, and the actions (create, scale, stop) that change them. Views read it and
 * re-render on `changed`; only this module and `requestAPI` talk to the server.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, errorMessage, requestAPI, sendJSON } from './requestAPI';
import { IAllocation, ICluster, IClusterList, INewCluster } from './types';

/** Poll interval while nothing is changing, and while a cluster starts or stops. */
const IDLE_INTERVAL_MS = 5000;
const BUSY_INTERVAL_MS = 1500;

export class GpulabModel {
  constructor() {
    this._poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: { interval: IDLE_INTERVAL_MS, backoff: true, max: 60 * 1000 },
      name: 'gpulab:sidebar',
      standby: 'when-hidden'
    });
  }

  /** Emitted whenever anything a view shows changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get allocation(): IAllocation | null {
    return this._allocation;
  }

  get allocationError(): string | null {
    return this._allocationError;
  }

  get clusters(): ICluster[] {
    return this._clusters;
  }

  get clustersError(): string | null {
    return this._clustersError;
  }

  /** The last refused action (create, scale, stop), as the server worded it. */
  get actionError(): string | null {
    return this._actionError;
  }

  /** The request field the server named with the last refusal, if any. */
  get actionField(): string | null {
    return this._actionField;
  }

  /** True until the first refresh has answered. */
  get loading(): boolean {
    return this._loading;
  }

  /** Ids of clusters with a scale or stop request in flight. */
  isPending(id: string): boolean {
    return this._pending.has(id);
  }

  get creating(): boolean {
    return this._creating;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Start polling (the sidebar became visible). */
  startPolling(): void {
    if (this._poll.isDisposed) {
      return;
    }
    this._visible = true;
    void this._poll.start();
  }

  /** Stop polling (the sidebar was hidden). */
  stopPolling(): void {
    this._visible = false;
    if (!this._poll.isDisposed) {
      void this._poll.stop();
    }
  }

  /** Fetch the allocation and the clusters now. */
  async refresh(): Promise<void> {
    const [allocation, clusters] = await Promise.allSettled([
      requestAPI<IAllocation>('allocation'),
      requestAPI<IClusterList>('clusters')
    ]);
    if (this.isDisposed) {
      return;
    }
    if (allocation.status === 'fulfilled') {
      this._allocation = allocation.value;
      this._allocationError = null;
    } else {
      this._allocationError = errorMessage(allocation.reason);
    }
    if (clusters.status === 'fulfilled') {
      this._clusters = clusters.value?.clusters ?? [];
      this._clustersError = null;
    } else {
      this._clustersError = errorMessage(clusters.reason);
    }
    this._loading = false;
    this._adjustInterval();
    this._changed.emit();
    if (allocation.status === 'rejected' && clusters.status === 'rejected') {
      // Let the poll back off while the server does not answer.
      throw allocation.reason;
    }
  }

  /** Clear the action error (the person dismissed it). */
  dismissError(): void {
    this._actionError = null;
    this._actionField = null;
    this._changed.emit();
  }

  /** Start a cluster; resolves with it, or null when the server refused (see actionError). */
  async create(spec: INewCluster): Promise<ICluster | null> {
    this._creating = true;
    this._actionError = null;
    this._actionField = null;
    this._changed.emit();
    try {
      const cluster = await sendJSON<ICluster>('clusters', 'POST', spec);
      this._upsert(cluster);
      return cluster;
    } catch (error) {
      this._fail(error);
      return null;
    } finally {
      this._creating = false;
      this._changed.emit();
      this._refreshSoon();
    }
  }

  /** Ask for `workers` workers. */
  async scale(id: string, workers: number): Promise<boolean> {
    return this._act(id, async () => {
      const cluster = await sendJSON<ICluster>(
        `clusters/${encodeURIComponent(id)}`,
        'PATCH',
        { workers }
      );
      this._upsert(cluster);
    });
  }

  /** Stop a cluster (or dismiss a failed one) and drop it from the list. */
  async stop(id: string): Promise<boolean> {
    return this._act(id, async () => {
      await requestAPI<void>(`clusters/${encodeURIComponent(id)}`, {
        method: 'DELETE'
      });
      // 204: stopped (or a failed one dismissed); the next poll agrees.
      this._clusters = this._clusters.filter(c => c.id !== id);
      this._adjustInterval();
    });
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _act(id: string, action: () => Promise<void>): Promise<boolean> {
    this._pending.add(id);
    this._actionError = null;
    this._actionField = null;
    this._changed.emit();
    try {
      await action();
      return true;
    } catch (error) {
      this._fail(error);
      return false;
    } finally {
      this._pending.delete(id);
      this._changed.emit();
      this._refreshSoon();
    }
  }

  private _fail(error: unknown): void {
    this._actionError = errorMessage(error);
    this._actionField = error instanceof ApiError ? (error.field ?? null) : null;
  }

  /** Fetch again soon, if the sidebar is showing (a hidden one does not poll). */
  private _refreshSoon(): void {
    if (this._visible && !this._poll.isDisposed) {
      void this._poll.refresh();
    }
  }

  private _upsert(cluster: ICluster): void {
    const index = this._clusters.findIndex(c => c.id === cluster.id);
    this._clusters =
      index < 0
        ? [...this._clusters, cluster]
        : this._clusters.map(c => (c.id === cluster.id ? cluster : c));
    this._adjustInterval();
  }

  /** Poll faster while a cluster is on its way up or down. */
  private _adjustInterval(): void {
    const busy = this._clusters.some(
      c => c.status === 'starting' || c.status === 'stopping'
    );
    const interval = busy ? BUSY_INTERVAL_MS : IDLE_INTERVAL_MS;
    if (this._poll.frequency.interval !== interval) {
      this._poll.frequency = { ...this._poll.frequency, interval };
    }
  }

  private _allocation: IAllocation | null = null;
  private _allocationError: string | null = null;
  private _clusters: ICluster[] = [];
  private _clustersError: string | null = null;
  private _actionError: string | null = null;
  private _actionField: string | null = null;
  private _visible = false;
  private _loading = true;
  private _creating = false;
  private _pending = new Set<string>();
  private _poll: Poll;
  private _changed = new Signal<this, void>(this);
}
