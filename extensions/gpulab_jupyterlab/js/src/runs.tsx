/**
 * The runs list: the user's training runs and those shared with them, each with its
 * status and last step, "open dashboard" (the hub's dashboards service, in a new tab)
 * and, for the user's own runs, "share" (a dialog: users, groups, view-only links).
 * Server text (run names, user names) is rendered as React text, never as markup.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ApiError, errorMessage } from './requestAPI';
import { RunsModel } from './runsModel';
import { INewRunLink, IRun, IRunAcl } from './types';

/** Link lifetimes offered in the share dialog, in seconds. */
const EXPIRIES: [string, number][] = [
  ['1 hour', 3600],
  ['1 day', 86400],
  ['7 days', 7 * 86400],
  ['30 days', 30 * 86400]
];

/**
 * The dashboard's URL as a link target: an http(s) URL, or a path on this origin (the
 * hub's `/services/dashboards/...`); null for anything else (`javascript:`, `//host`).
 */
export function dashboardHref(url: string | null | undefined): string | null {
  if (!url) {
    return null;
  }
  if (/^https?:\/\//i.test(url)) {
    return url;
  }
  if (url.startsWith('/') && !url.startsWith('//')) {
    return url;
  }
  return null;
}

/** An absolute URL for a link the server gave (a path on the hub, or a full URL). */
function absolute(url: string): string {
  return new URL(url, window.location.origin).href;
}

function names(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map(n => n.trim())
    .filter(n => n.length > 0);
}

function RunItem(props: {
  run: IRun;
  onShare: (run: IRun) => void;
}): JSX.Element {
  const { run, onShare } = props;
  const href = dashboardHref(run.dashboard_url);
  return (
    <li
      className="gpulab-Run"
      data-testid="gpulab-run"
      data-run-id={run.id}
      data-owner={run.owner}
      data-status={run.status}
    >
      <div className="gpulab-Cluster-head">
        <span className="gpulab-Run-name" data-testid="gpulab-run-name" title={run.id}>
          {run.name || run.id}
        </span>
        {!run.mine && (
          <span className="gpulab-Run-owner" data-testid="gpulab-run-owner">
            shared by {run.owner}
          </span>
        )}
      </div>
      <div className="gpulab-Cluster-statusline">
        <span
          className={`gpulab-Status gpulab-Status-${run.status}`}
          data-testid="gpulab-run-status"
        >
          {run.status}
        </span>
        <span className="gpulab-Note" data-testid="gpulab-run-step">
          {run.step === null ? 'no steps yet' : `step ${run.step}`}
        </span>
      </div>
      <div className="gpulab-Cluster-actions">
        {href !== null && (
          <a
            className="gpulab-Link"
            data-testid="gpulab-run-open"
            href={href}
            target="_blank"
            rel="noopener noreferrer"
          >
            Open dashboard
          </a>
        )}
        {run.mine && (
          <button
            type="button"
            className="jp-Button jp-mod-styled gpulab-Button"
            data-testid="gpulab-run-share"
            onClick={() => onShare(run)}
          >
            Share
          </button>
        )}
      </div>
    </li>
  );
}

export function RunsSection(props: {
  model: RunsModel;
  onShare: (run: IRun) => void;
}): JSX.Element {
  const { model, onShare } = props;
  return (
    <section className="gpulab-Card gpulab-Runs" data-testid="gpulab-runs">
      <div className="gpulab-Card-titlebar">
        <h3 className="gpulab-Card-title">Training runs</h3>
      </div>
      {model.error !== null && (
        <p className="gpulab-Error" data-testid="gpulab-runs-error" role="alert">
          {model.error}
        </p>
      )}
      {!model.loading && model.error === null && model.runs.length === 0 && (
        <p className="gpulab-Note" data-testid="gpulab-no-runs">
          No runs yet: start one with gpulab.training.run or the gpulab launcher.
        </p>
      )}
      {model.runs.length > 0 && (
        <ul className="gpulab-ClusterList" data-testid="gpulab-run-list">
          {model.runs.map(run => (
            <RunItem key={`${run.owner}/${run.id}`} run={run} onShare={onShare} />
          ))}
        </ul>
      )}
    </section>
  );
}

/** The share dialog's body: it talks to the server itself (each change at once). */
function SharePanel(props: { model: RunsModel; run: IRun }): JSX.Element {
  const { model, run } = props;
  const [acl, setAcl] = React.useState<IRunAcl | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [field, setField] = React.useState<string | null>(null);
  const [users, setUsers] = React.useState('');
  const [groups, setGroups] = React.useState('');
  const [expiry, setExpiry] = React.useState(EXPIRIES[1][1]);
  const [created, setCreated] = React.useState<INewRunLink | null>(null);
  const [busy, setBusy] = React.useState(false);

  const act = async (action: () => Promise<IRunAcl | void>): Promise<boolean> => {
    setBusy(true);
    setError(null);
    setField(null);
    try {
      const answer = await action();
      setAcl(answer ? answer : await model.acl(run));
      return true;
    } catch (e) {
      setError(errorMessage(e));
      setField(e instanceof ApiError ? (e.field ?? null) : null);
      return false;
    } finally {
      setBusy(false);
    }
  };

  React.useEffect(() => {
    void act(() => model.acl(run));
  }, [run.owner, run.id]);

  const add = async (): Promise<void> => {
    const change = { share: { users: names(users), groups: names(groups) } };
    if (await act(() => model.changeAcl(run, change))) {
      setUsers('');
      setGroups('');
    }
  };

  const createLink = async (): Promise<void> => {
    await act(async () => {
      const link = await model.createLink(run, expiry);
      setCreated(link);
    });
  };

  return (
    <div className="gpulab-Form gpulab-Share" data-testid="gpulab-share-dialog">
      <p className="gpulab-Note">
        Viewers see this run&apos;s dashboard, read-only, and nothing else of yours.
      </p>
      {error !== null && (
        <p
          className="gpulab-Error"
          data-testid="gpulab-share-error"
          data-field={field ?? undefined}
          role="alert"
        >
          {error}
        </p>
      )}
      <label className="gpulab-Field">
        <span className="gpulab-Field-label">Users</span>
        <input
          className="jp-mod-styled gpulab-Input"
          data-testid="gpulab-share-users-input"
          placeholder="user names, comma-separated"
          value={users}
          aria-invalid={field?.endsWith('users') ? 'true' : undefined}
          onChange={e => setUsers(e.target.value)}
        />
      </label>
      <label className="gpulab-Field">
        <span className="gpulab-Field-label">Groups</span>
        <input
          className="jp-mod-styled gpulab-Input"
          data-testid="gpulab-share-groups-input"
          placeholder="hub groups, e.g. a workshop"
          value={groups}
          aria-invalid={field?.endsWith('groups') ? 'true' : undefined}
          onChange={e => setGroups(e.target.value)}
        />
      </label>
      <button
        type="button"
        className="jp-Button jp-mod-styled gpulab-Button gpulab-Share-add"
        data-testid="gpulab-share-add"
        disabled={busy || (names(users).length === 0 && names(groups).length === 0)}
        onClick={() => void add()}
      >
        Share
      </button>
      <h4>Shared with</h4>
      {acl !== null && acl.users.length === 0 && acl.groups.length === 0 && (
        <p className="gpulab-Note" data-testid="gpulab-share-nobody">
          Nobody yet: only you can view it.
        </p>
      )}
      <ul className="gpulab-Warnings">
        {(acl?.users ?? []).map(user => (
          <li key={`u:${user}`} data-testid="gpulab-share-user" data-name={user}>
            {user}{' '}
            <button
              type="button"
              className="gpulab-Dismiss"
              aria-label={`Stop sharing with ${user}`}
              data-testid="gpulab-share-remove"
              disabled={busy}
              onClick={() => void act(() => model.changeAcl(run, { unshare: { users: [user] } }))}
            >
              ×
            </button>
          </li>
        ))}
        {(acl?.groups ?? []).map(group => (
          <li key={`g:${group}`} data-testid="gpulab-share-group" data-name={group}>
            group {group}{' '}
            <button
              type="button"
              className="gpulab-Dismiss"
              aria-label={`Stop sharing with group ${group}`}
              data-testid="gpulab-share-remove"
              disabled={busy}
              onClick={() =>
                void act(() => model.changeAcl(run, { unshare: { groups: [group] } }))
              }
            >
              ×
            </button>
          </li>
        ))}
      </ul>
      <h4>View-only links</h4>
      {acl !== null && !acl.links_allowed ? (
        <p className="gpulab-Note" data-testid="gpulab-links-off">
          View-only links are turned off on this server.
        </p>
      ) : (
        <div className="gpulab-Cluster-actions">
          <select
            className="jp-mod-styled gpulab-Select"
            data-testid="gpulab-link-expiry"
            value={expiry}
            onChange={e => setExpiry(Number(e.target.value))}
          >
            {EXPIRIES.map(([label, seconds]) => (
              <option key={seconds} value={seconds}>
                expires in {label}
              </option>
            ))}
          </select>
          <button
            type="button"
            className="jp-Button jp-mod-styled gpulab-Button"
            data-testid="gpulab-link-create"
            disabled={busy}
            onClick={() => void createLink()}
          >
            Create link
          </button>
        </div>
      )}
      {created !== null && (
        <label className="gpulab-Field">
          <span className="gpulab-Field-label">
            New link (copy it now: it is not shown again)
          </span>
          <input
            className="jp-mod-styled gpulab-Input"
            data-testid="gpulab-link-new"
            readOnly
            value={absolute(created.url)}
            onFocus={e => e.target.select()}
          />
        </label>
      )}
      <ul className="gpulab-Warnings">
        {(acl?.links ?? []).map(link => (
          <li
            key={link.id}
            data-testid="gpulab-link"
            data-link-id={link.id}
            data-active={link.active ? 'true' : 'false'}
          >
            link {link.id}:{' '}
            {link.revoked
              ? 'revoked'
              : link.active
                ? `until ${new Date(link.expires).toLocaleString()}`
                : 'expired'}{' '}
            {link.active && (
              <button
                type="button"
                className="jp-Button jp-mod-styled gpulab-Button"
                data-testid="gpulab-link-revoke"
                disabled={busy}
                onClick={() => void act(() => model.revokeLink(run, link.id))}
              >
                Revoke
              </button>
            )}
          </li>
        ))}
      </ul>
    </div>
  );
}

/** Open the share dialog for `run` (changes apply at once; the button closes it). */
export async function showShareDialog(model: RunsModel, run: IRun): Promise<void> {
  const body = ReactWidget.create(<SharePanel model={model} run={run} />);
  await showDialog({
    title: `Share run "${run.name || run.id}"`,
    body,
    buttons: [Dialog.okButton({ label: 'Done' })]
  });
  void model.refresh().catch(() => undefined);
}
