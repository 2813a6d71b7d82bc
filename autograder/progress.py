"""Progress bars: a widget in Jupyter where ipywidgets is installed, text everywhere else.

`tqdm.auto` picks the notebook widget in any Jupyter kernel and, where ipywidgets is missing (a plain
venv), prints tqdm's "IProgress not found" warning on every bar: students read it as an error."""
from __future__ import annotations

import importlib.util


def tqdm_class():
    """tqdm.auto's class where ipywidgets can be imported, else the text bar (tqdm.std)."""
    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm
