/**
 * The "New cluster" dialog: a form in a JupyterLab `Dialog`. Inputs are checked here
 * (shape and bounds); the server still decides (quota, worker limit) and its refusal
 * is shown in the sidebar.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { INewCluster, Protocol } from './types';

/** The form's raw values (strings as typed). */
export interface IFormValues {
  name: string;
  workers: string;
  threads: string;
  gpus: '0' | '1';
  memory: string;
  rmm: string;
  protocol: Protocol;
}

/** What the dialog knows of the allocation when it opens. */
export interface IFormContext {
  hasGpus: boolean;
  workerLimit: number | null;
  workersInUse: number;
}

/** "4 GiB", "512MB", "2e9", "8 GB": what Dask's parse_bytes takes. */
const SIZE = /^\s*\d+(\.\d+)?(e\d+)?\s*([kmgtp]i?b?|b)?\s*$/i;
/** As the server's spec (openapi.yaml): starts with a letter or digit, at most 64. */
const NAME = /^([A-Za-z0-9][A-Za-z0-9 _.-]{0,63})?$/;
const MAX_WORKERS = 512;
const MAX_THREADS = 256;
const MAX_SIZE_LENGTH = 32;

export function defaultValues(context: IFormContext): IFormValues {
  return {
    name: '',
    workers: '1',
    threads: '',
    gpus: context.hasGpus ? '1' : '0',
    memory: '',
    rmm: '',
    protocol: 'tls'
  };
}

/** Check the form; `errors` maps a field to what is wrong with it. */
export function validate(
  values: IFormValues,
  context: IFormContext
): { spec: INewCluster | null; errors: { [field: string]: string } } {
  const errors: { [field: string]: string } = {};
  const workers = Number(values.workers);
  if (!/^\s*\d+\s*$/.test(values.workers) || workers < 1 || workers > MAX_WORKERS) {
    errors.workers = `Workers: a whole number from 1 to ${MAX_WORKERS}.`;
  }
  const threads = Number(values.threads);
  if (
    values.threads.trim() &&
    (!/^\s*\d+\s*$/.test(values.threads) || threads < 1 || threads > MAX_THREADS)
  ) {
    errors.threads = `Threads per worker: a whole number from 1 to ${MAX_THREADS} (or empty).`;
  }
  if (!NAME.test(values.name.trim())) {
    errors.name =
      'Name: up to 64 letters, digits, spaces, dots, dashes or underscores, starting with a letter or digit.';
  }
  const size = (text: string): boolean =>
    text.trim().length <= MAX_SIZE_LENGTH && SIZE.test(text);
  if (values.memory.trim() && !size(values.memory)) {
    errors.memory = 'Memory per worker: a size such as "4 GiB" (or empty for automatic).';
  }
  const gpus = context.hasGpus && values.gpus === '1' ? 1 : 0;
  if (gpus && values.rmm.trim() && !size(values.rmm)) {
    errors.rmm = 'RMM pool size: a size such as "2 GiB" (or empty for none).';
  }
  if (Object.keys(errors).length > 0) {
    return { spec: null, errors };
  }
  const spec: INewCluster = { workers, gpus_per_worker: gpus, protocol: values.protocol };
  if (values.name.trim()) {
    spec.name = values.name.trim();
  }
  if (values.threads.trim()) {
    spec.threads_per_worker = threads;
  }
  if (values.memory.trim()) {
    spec.memory_limit = values.memory.trim();
  }
  if (gpus && values.rmm.trim()) {
    spec.rmm_pool_size = values.rmm.trim();
  }
  return { spec, errors };
}

function Field(props: {
  label: string;
  error?: string;
  hint?: string;
  children: React.ReactNode;
}): JSX.Element {
  return (
    <label className="gpulab-Field">
      <span className="gpulab-Field-label">{props.label}</span>
      {props.children}
      {props.hint && <span className="gpulab-Field-hint">{props.hint}</span>}
    </label>
  );
}

/** The dialog body: a controlled form; `getValue()` is what the dialog resolves with. */
export class NewClusterForm extends ReactWidget implements Dialog.IBodyWidget<IFormValues> {
  constructor(
    private _context: IFormContext,
    private _values: IFormValues,
    private _shownError: string | null = null
  ) {
    super();
    this.addClass('gpulab-NewClusterForm');
  }

  getValue(): IFormValues {
    return { ...this._values };
  }

  protected render(): JSX.Element {
    const context = this._context;
    const values = this._values;
    const { errors } = validate(values, context);
    const set = (field: keyof IFormValues) => (
      event: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>
    ): void => {
      this._values = { ...this._values, [field]: event.target.value };
      this._shownError = null;
      this.update();
    };
    const limit =
      context.workerLimit === null
        ? 'no worker limit'
        : `limit ${context.workerLimit}, ${context.workersInUse} in use`;
    const gpu = context.hasGpus && values.gpus === '1';
    const messages = Object.values(errors);
    return (
      <form
        className="gpulab-Form"
        data-testid="gpulab-new-cluster-form"
        onSubmit={event => event.preventDefault()}
      >
        <Field label="Name (optional)">
          <input
            className="jp-mod-styled gpulab-Input"
            data-testid="gpulab-form-name"
            value={values.name}
            placeholder="my-cluster"
            aria-invalid={'name' in errors}
            onChange={set('name')}
          />
        </Field>
        <Field label="Workers" hint={limit}>
          <input
            type="number"
            min={1}
            step={1}
            className="jp-mod-styled gpulab-Input"
            data-testid="gpulab-form-workers"
            value={values.workers}
            aria-invalid={'workers' in errors}
            onChange={set('workers')}
          />
        </Field>
        <Field label="Threads per worker (optional)">
          <input
            type="number"
            min={1}
            step={1}
            className="jp-mod-styled gpulab-Input"
            data-testid="gpulab-form-threads"
            value={values.threads}
            placeholder="automatic"
            aria-invalid={'threads' in errors}
            onChange={set('threads')}
          />
        </Field>
        {context.hasGpus && (
          <Field label="GPUs per worker">
            <select
              className="jp-mod-styled gpulab-Select"
              data-testid="gpulab-form-gpus"
              value={values.gpus}
              onChange={set('gpus')}
            >
              <option value="1">1 (Dask-CUDA)</option>
              <option value="0">0 (CPU workers)</option>
            </select>
          </Field>
        )}
        <Field label="Memory per worker (optional)">
          <input
            className="jp-mod-styled gpulab-Input"
            data-testid="gpulab-form-memory"
            value={values.memory}
            placeholder="automatic, e.g. 4 GiB"
            aria-invalid={'memory' in errors}
            onChange={set('memory')}
          />
        </Field>
        {gpu && (
          <Field label="RMM pool size (optional)">
            <input
              className="jp-mod-styled gpulab-Input"
              data-testid="gpulab-form-rmm"
              value={values.rmm}
              placeholder="none, e.g. 2 GiB"
              aria-invalid={'rmm' in errors}
              onChange={set('rmm')}
            />
          </Field>
        )}
        <Field label="Protocol">
          <select
            className="jp-mod-styled gpulab-Select"
            data-testid="gpulab-form-protocol"
            value={values.protocol}
            onChange={set('protocol')}
          >
            <option value="tls">tls (encrypted)</option>
            <option value="tcp">tcp</option>
            <option value="ucx">ucx</option>
          </select>
        </Field>
        {(messages.length > 0 || this._shownError) && (
          <div className="gpulab-Error" data-testid="gpulab-form-error" role="alert">
            {this._shownError ?? messages.join(' ')}
          </div>
        )}
      </form>
    );
  }
}

/**
 * Ask for a new cluster's spec. Resolves with a checked spec, or null when the person
 * cancelled. An invalid form opens again with its values and what is wrong.
 */
export async function askNewCluster(context: IFormContext): Promise<INewCluster | null> {
  let values = defaultValues(context);
  let shownError: string | null = null;
  for (;;) {
    const form = new NewClusterForm(context, values, shownError);
    const result = await showDialog<IFormValues>({
      title: 'New Dask cluster',
      body: form,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })],
      focusNodeSelector: 'input[data-testid="gpulab-form-workers"]'
    });
    if (!result.button.accept || result.value === null) {
      return null;
    }
    values = result.value;
    if (!context.hasGpus) {
      values.gpus = '0';
    }
    const { spec, errors } = validate(values, context);
    if (spec !== null) {
      return spec;
    }
    shownError = Object.values(errors).join(' ');
  }
}
