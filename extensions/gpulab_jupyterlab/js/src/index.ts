/**
 * gpulab's JupyterLab plugin: the sidebar, its commands and the launcher card.
 * Activation only builds widgets and registers commands; it awaits nothing (the
 * sidebar fetches once it is shown).
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';

import { gpuIcon } from './icons';
import { GpulabSidebar, SIDEBAR_ID } from './sidebar';

import '../style/index.css';

export namespace CommandIDs {
  export const openSidebar = 'gpulab:open-sidebar';
  export const newCluster = 'gpulab:new-cluster';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'gpulab-jupyterlab:sidebar',
  description: "gpulab's sidebar: the GPU allocation, the quota meter and Dask clusters.",
  autoStart: true,
  requires: [ILabShell],
  optional: [INotebookTracker, ILauncher, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell,
    tracker: INotebookTracker | null,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ): void => {
    const sidebar = new GpulabSidebar(app, tracker);
    labShell.add(sidebar, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(sidebar, SIDEBAR_ID);
    }

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'Show gpulab sidebar',
      caption: 'GPUs, quota and Dask clusters of this server',
      icon: gpuIcon,
      execute: () => {
        labShell.activateById(SIDEBAR_ID);
      }
    });

    app.commands.addCommand(CommandIDs.newCluster, {
      label: args => (args.isLauncher ? 'gpulab cluster' : 'New gpulab Dask cluster…'),
      caption: 'Start a Dask cluster on this server’s allocation',
      icon: gpuIcon,
      execute: async () => {
        labShell.activateById(SIDEBAR_ID);
        return sidebar.newCluster();
      }
    });

    if (launcher) {
      launcher.add({
        command: CommandIDs.newCluster,
        args: { isLauncher: true },
        category: 'Other',
        rank: 10
      });
    }
    if (palette) {
      for (const command of [CommandIDs.openSidebar, CommandIDs.newCluster]) {
        palette.addItem({ command, category: 'gpulab' });
      }
    }
  }
};

export default plugin;
