/** "Insert client code": a new code cell in the active notebook that connects to a cluster. */
import { INotebookTracker } from '@jupyterlab/notebook';

/** The cell's source; the id is written as a JSON string, which Python reads as a str. */
export function clientCode(clusterId: string): string {
  return `from gpulab import clusters\nclient = clusters.connect(${JSON.stringify(clusterId)})\nclient`;
}

/**
 * Insert the cell below the active cell of the active notebook and select it.
 * Returns false when no notebook is active.
 */
export function insertClientCode(tracker: INotebookTracker | null, clusterId: string): boolean {
  const panel = tracker?.currentWidget;
  const model = panel?.content.model;
  if (!panel || !model) {
    return false;
  }
  const notebook = panel.content;
  const index = model.cells.length === 0 ? 0 : notebook.activeCellIndex + 1;
  model.sharedModel.insertCell(index, {
    cell_type: 'code',
    source: clientCode(clusterId),
    metadata: {}
  });
  notebook.activeCellIndex = index;
  notebook.deselectAll();
  const cell = notebook.activeCell;
  if (cell) {
    void notebook.scrollToCell(cell);
  }
  return true;
}
