"""py-tally: a Gofer shared task written in Python, built into a WebAssembly component by
componentize-py against Gofer's plugin interface (wit/0.2.0, the `task` world). The server loads
it unmodified, like a plugin written in Rust.

It counts its runs per pipeline in the plugin's own objects, prints the count (the task's log),
logs through the host, and ends with the setting `exit_code` (default 0). The operator's
configuration (`[plugins.config.py-tally]`) may set `greeting`.
"""

import os

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, objects, types

SETTINGS = {
    "exit_code": "The exit code to end with, 0 to 255; default 0.",
    "label": "A word to print with the count; default \"runs\".",
}


class WitWorld(wit_world.WitWorld):
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(
            name="py-tally",
            kind=types.PluginKind.TASK,
            version="1.0.0",
            description="Counts its runs per pipeline (an example plugin written in Python).",
            settings=[types.Parameter(key, False, doc) for key, doc in SETTINGS.items()],
        )

    def run(self, settings):
        settings = dict(settings)
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise Err(f"unknown setting '{unknown[0]}'; py-tally takes 'exit_code' and 'label'")
        try:
            exit_code = int(settings.get("exit_code", "0"))
        except ValueError:
            exit_code = -1
        if not 0 <= exit_code <= 255:
            raise Err(f"'exit_code' must be 0 to 255, got '{settings['exit_code']}'")

        pipeline = os.environ.get("GOFER_PIPELINE_ID", "unknown")
        key = f"count/{pipeline}"
        count = int((objects.get(key) or b"0").decode()) + 1
        objects.put(key, str(count).encode())

        greeting = dict(host.config()).get("greeting", "hello")
        label = settings.get("label", "runs")
        print(f"{greeting} from Python: {count} {label} of {pipeline}")
        host.log(host.LogLevel.INFO, f"{pipeline} has run py-tally {count} times")
        return exit_code
