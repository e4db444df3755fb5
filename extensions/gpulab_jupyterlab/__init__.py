"""gpulab_jupyterlab: the Jupyter server extension and JupyterLab 4 sidebar of gpulab.

Only the package exists so far: the REST handlers under /gpulab/ and the sidebar are
built by the clusters issue (#5). It registers nothing with Jupyter server yet.
"""
