/**
 * The runs list's state: the runs as last fetched (the user's and those shared with
 * them), refreshed on an interval while the sidebar shows, and the share actions
 * (ACL changes, view-only links). Only this module and `requestAPI` talk to the
 * server for runs; views re-render on `changed`.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { errorMessage, requestAPI, sendJSON } from './requestAPI';
import { IAclChange, INewRunLink, IRun, IRunAcl, IRunList } from './types';

/** Poll interval while nothing runs, and while a run of the list is running. */
const IDLE_INTERVAL_MS = 10000;
const BUSY_INTERVAL_MS = 3000;

function runPath(run: IRun, ...rest: string[]): string {
  return ['runs', run.owner, run.id, ...rest].map(encodeURIComponent).join('/');
}

export class RunsModel {
  constructor() {
    this._poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: { interval: IDLE_INTERVAL_MS, backoff: true, max: 60 * 1000 },
      name: 'gpulab:runs',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get runs(): IRun[] {
    return this._runs;
  }

  get error(): string | null {
    return this._error;
  }

  get loading(): boolean {
    return this._loading;
  }

  /** Whether the operator allows view-only links on this server. */
  get linksAllowed(): boolean {
    return this._linksAllowed;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  startPolling(): void {
    if (!this._poll.isDisposed) {
      void this._poll.start();
    }
  }

  stopPolling(): void {
    if (!this._poll.isDisposed) {
      void this._poll.stop();
    }
  }

  async refresh(): Promise<void> {
    try {
      const list = await requestAPI<IRunList>('runs');
      if (this.isDisposed) {
        return;
      }
      this._runs = list?.runs ?? [];
      this._linksAllowed = list?.links_allowed ?? false;
      this._error = null;
    } catch (error) {
      this._error = errorMessage(error);
      throw error; // the poll backs off while the server does not answer
    } finally {
      if (!this.isDisposed) {
        this._loading = false;
        const busy = this._runs.some(r => r.status === 'running');
        const interval = busy ? BUSY_INTERVAL_MS : IDLE_INTERVAL_MS;
        if (this._poll.frequency.interval !== interval) {
          this._poll.frequency = { ...this._poll.frequency, interval };
        }
        this._changed.emit();
      }
    }
  }

  /** Who may view `run` (its owner asks). */
  acl(run: IRun): Promise<IRunAcl> {
    return requestAPI<IRunAcl>(runPath(run, 'acl'));
  }

  changeAcl(run: IRun, change: IAclChange): Promise<IRunAcl> {
    return sendJSON<IRunAcl>(runPath(run, 'acl'), 'PATCH', change);
  }

  /** A view-only link; its token is in this answer only. */
  createLink(run: IRun, expiresInSeconds: number): Promise<INewRunLink> {
    return sendJSON<INewRunLink>(runPath(run, 'links'), 'POST', {
      expires_in_seconds: expiresInSeconds
    });
  }

  async revokeLink(run: IRun, linkId: string): Promise<void> {
    await requestAPI<void>(runPath(run, 'links', linkId), { method: 'DELETE' });
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _runs: IRun[] = [];
  private _error: string | null = null;
  private _loading = true;
  private _linksAllowed = false;
  private _poll: Poll;
  private _changed = new Signal<this, void>(this);
}
