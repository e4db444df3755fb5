/** The sidebar's icon: a GPU card (board, fan, connector pins). */
import { LabIcon } from '@jupyterlab/ui-components';

import gpuSvg from '../style/icons/gpu.svg';

export const gpuIcon = new LabIcon({ name: 'gpulab:gpu', svgstr: gpuSvg });
