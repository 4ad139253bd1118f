"""Programs that run INSIDE a sandbox (stdlib only, cerver-sandbox-infra).

The host side never imports them: it reads their source (``source``) and starts it as
``python -c <source>`` through the sandbox's confinement. Each is guarded by
``if __name__ == "__main__"``, so importing one (a linter, a test) runs nothing.
"""

from importlib import resources


def source(name: str) -> str:
    """The text of the inside program ``name`` (a module file of this folder)."""
    return resources.files(__name__).joinpath(f"{name}.py").read_text()
