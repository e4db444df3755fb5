/**
 * The one place that knows gpulab's REST URLs: `<baseUrl>/gpulab/<path>`, where the
 * base URL is the server's (e.g. `/user/alice/` under JupyterHub). JSON in and out;
 * an error answer becomes an `ApiError` carrying the server's `message` (and `field`).
 * `ServerConnection.makeRequest` adds the XSRF header that writes need.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IErrorBody } from './types';

/** An error answer of gpulab's API, or a request that never got one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly body: Partial<IErrorBody> = {}
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The request field the server refused, if it named one. */
  get field(): string | undefined {
    return this.body.field;
  }

  get reason(): string | undefined {
    return this.body.reason;
  }
}

let settings: ServerConnection.ISettings | null = null;

function serverSettings(): ServerConnection.ISettings {
  if (settings === null) {
    settings = ServerConnection.makeSettings();
  }
  return settings;
}

/** The server's base URL (ends with a slash). */
export function baseUrl(): string {
  return serverSettings().baseUrl;
}

/**
 * An absolute URL for a path the API gave relative to the server's base URL (like a
 * cluster's `dashboard_link`); an http(s) URL as it is (a Dask Gateway's dashboard); null
 * for anything else (a scheme such as `javascript:`, or `//host`).
 */
export function serverUrl(relative: string | null | undefined): string | null {
  if (!relative) {
    return null;
  }
  // A Dask Gateway's dashboard is an absolute http(s) URL of its own; any other scheme
  // (javascript:, data:, ...) or a protocol-relative URL is refused.
  if (/^https?:\/\//i.test(relative)) {
    return relative;
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(relative) || relative.startsWith('//')) {
    return null;
  }
  return URLExt.join(baseUrl(), relative.replace(/^\/+/, ''));
}

/** The API URL of `path` (e.g. `clusters/abc`). */
export function apiUrl(path: string): string {
  return URLExt.join(baseUrl(), 'gpulab', path);
}

async function errorFrom(response: Response): Promise<ApiError> {
  let body: Partial<IErrorBody> = {};
  try {
    const data = await response.json();
    if (data && typeof data === 'object') {
      body = data as Partial<IErrorBody>;
    }
  } catch {
    // not JSON (a proxy's or tornado's HTML page): fall back to the status line
  }
  const message =
    typeof body.message === 'string' && body.message
      ? body.message
      : `${response.status} ${response.statusText || 'error'}`.trim();
  return new ApiError(message, response.status, body);
}

/**
 * Call gpulab's API. Resolves with the parsed JSON body (undefined for 204), rejects
 * with an `ApiError` for an error answer or a network failure.
 */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {}
): Promise<T> {
  const headers = new Headers(init.headers);
  if (typeof init.body === 'string' && !headers.has('Content-Type')) {
    headers.set('Content-Type', 'application/json');
  }
  const request: RequestInit = { ...init, headers };
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      apiUrl(path),
      request,
      serverSettings()
    );
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ApiError(`Could not reach the server: ${reason}`, 0);
  }
  if (!response.ok) {
    throw await errorFrom(response);
  }
  if (response.status === 204) {
    return undefined as T;
  }
  const text = await response.text();
  if (!text) {
    return undefined as T;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError('The server sent an answer that is not JSON', response.status);
  }
}

/** `requestAPI` with a JSON body. */
export function sendJSON<T>(
  path: string,
  method: 'POST' | 'PATCH' | 'PUT',
  body: unknown
): Promise<T> {
  return requestAPI<T>(path, { method, body: JSON.stringify(body) });
}

/** The message to show a person for any error. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}
