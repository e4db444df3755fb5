"""What a person sees in JupyterLab (Debian's Chromium) when a GPU kernel can't start."""

import json

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.kernels.conftest import Kernels, start_server

pytestmark = [pytest.mark.browser]


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        yield page
        chromium.close()


def test_the_refusal_is_shown_in_jupyterlab(tmp_path, kernelspec_path, page):
    live = start_server(tmp_path, "GPU-aaa", kernelspec_path)
    try:
        kernels = Kernels(live)
        kernels.open_notebook("gpulab-gpu", "holder <img src=x>.ipynb")
        # A notebook whose kernel is the GPU kernel: opening it starts one.
        notebook = {"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {
            "kernelspec": {"name": "gpulab-gpu", "display_name": "Python 3 (gpulab GPU)",
                           "language": "python"}}}
        saved = requests.put(live.url + "api/contents/wants-a-gpu.ipynb", headers=live.auth,
                             data=json.dumps({"type": "notebook", "content": notebook}))
        assert saved.status_code in (200, 201), saved.text

        page.goto(f"{live.url}lab/tree/wants-a-gpu.ipynb?token={live.token}")
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("No free GPU for this kernel", timeout=90_000)
        # The holder's notebook name is shown as text, never as markup.
        expect(dialog).to_contain_text("GPU-aaa held by kernel")
        expect(dialog).to_contain_text("(holder <img src=x>.ipynb)")
        expect(dialog.locator("img")).to_have_count(0)
        expect(dialog).to_contain_text("Python 3 (gpulab CPU)")
        assert len(kernels.leases()) == 1
    finally:
        live.stop()
