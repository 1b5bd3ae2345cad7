"""VS Code's hidden requests, built exactly as microsoft/vscode-jupyter builds them.

Source: microsoft/vscode-jupyter at commit 3d24702e0e3a7258a163979a9c8b2585e9f43674 (2026-07-24; package.json
version 2026.6.1, after tag v2025.9.1). Each builder names the TypeScript it follows; the helper files in
`vscode_jupyter/` are that commit's `pythonFiles/vscode_datascience_helpers/…` (MIT, see vscode_jupyter/LICENSE).
To check a later release, see vscode_jupyter/README.md.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HELPERS = Path(__file__).resolve().parent / "vscode_jupyter"

#: src/kernels/helpers.ts executeSilently: the flags of every Variables view and Data Viewer request
EXECUTE_SILENTLY = {"silent": False, "stop_on_error": False, "allow_stdin": True, "store_history": False}
#: src/kernels/helpers.ts executeSilentlyAndEmitOutput: the flags of background executions
EMIT_OUTPUT = {"silent": False, "stop_on_error": False, "allow_stdin": False, "store_history": False}
#: src/kernels/execution/cellExecution.ts: an ordinary cell
CELL = {"silent": False, "stop_on_error": False, "allow_stdin": True, "store_history": True}

# dedent`…` of variableScriptGenerator.ts and dataFrameScriptGenerator.ts
_CLEANUP_VARIABLE = "try:\n    del _VSCODE_getVariable\nexcept:\n    pass"
_CLEANUP_WHO_LS = "try:\n    del _VSCODE_rwho_ls\nexcept:\n    pass"
_CLEANUP_DATAFRAME = "try:\n    del _VSCODE_getDataFrame\nexcept:\n    pass"


def _helper(name: str) -> str:
    return (HELPERS / name).read_text()


def silently(code: str) -> str:
    """executeSilently sends `code.replace(/\\r\\n/g, '\\n')`."""
    return code.replace("\r\n", "\n")


def variable_types() -> str:
    """variableScriptGenerator.ts generateCodeToGetVariableTypes({isDebugging: false})."""
    initialize = f"{_helper('vscodeGetVariableInfo.py')}\n\n_VSCODE_rwho_ls = %who_ls\n"
    code = '_VSCODE_getVariable("types", False, _VSCODE_rwho_ls)'
    return silently(f"{initialize}{code}\n\n{_CLEANUP_VARIABLE}\n{_CLEANUP_WHO_LS}")


def variable_info(name: str) -> str:
    """variableScriptGenerator.ts generateCodeToGetVariableInfo({isDebugging: false, variableName})."""
    code = f'_VSCODE_getVariable("info", False, {name})'
    return silently(f"{_helper('vscodeGetVariableInfo.py')}\n\n{code}\n\n{_CLEANUP_VARIABLE}")


def variable_properties(name: str, attributes: list[str]) -> str:
    """variableScriptGenerator.ts generateCodeToGetVariableProperties (the list is JSON.stringify'd)."""
    code = f'_VSCODE_getVariable("properties", False, {name}, {json.dumps(attributes, separators=(",", ":"))})'
    return silently(f"{_helper('vscodeGetVariableInfo.py')}\n\n{code}\n\n{_CLEANUP_VARIABLE}")


def dataframe_info(name: str) -> str:
    """dataFrameScriptGenerator.ts generateCodeToGetDataFrameInfo({isDebugging: false, variableName})."""
    code = f'_VSCODE_getDataFrame("info", False, {name})'
    return silently(f"{_helper('vscodeDataFrame.py')}\n\n{code}\n\n{_CLEANUP_DATAFRAME}")


def dataframe_rows(name: str, start: int, end: int) -> str:
    """dataFrameScriptGenerator.ts generateCodeToGetDataFrameRows."""
    code = f'_VSCODE_getDataFrame("rows", False, {name}, {start}, {end})'
    return silently(f"{_helper('vscodeDataFrame.py')}\n\n{code}\n\n{_CLEANUP_DATAFRAME}")


def all_variable_descriptions() -> list[str]:
    """variableScriptGenerator.ts generateCodeToGetAllVariableDescriptions(undefined), split on /\\r?\\n/
    as pythonVariableRequester.ts passes it to execCodeInBackgroundThread."""
    script = _helper("vscodeGetVariablesForProvider.py") + "\n\nvariables= %who_ls\nreturn _VSCODE_getVariableDescriptions(variables)"
    return re.split(r"\r?\n", script)


# src/kernels/chat/generator.ts escapeStringToEmbedInPythonCode (a JS `\'` is a plain quote: no change)
_ESCAPES = [("\\", "\\\\"), ('"', '\\"'), ("'", "'"), ("\b", "\\b"), ("\f", "\\f"), ("\n", "\\n"), ("\r", "\\r"),
            ("\t", "\\t")]


def escape(value: str) -> str:
    for old, new in _ESCAPES:
        value = value.replace(old, new)
    return value


def complete_statement(code: str, cursor_pos: int) -> list[str]:
    """kernelCompletionProvider.ts getPythonKernelCompletion."""
    return [f'return get_ipython().kernel.do_complete("{escape(code)}", {cursor_pos})']


def inspect_statement(code: str, cursor_pos: int, detail_level: int = 0) -> list[str]:
    """resolveCompletionItem.ts sendPythonInspectRequest."""
    return [f'return get_ipython().kernel.do_inspect("{escape(code)}", {cursor_pos}, {detail_level})']


def background(counter: int, code_with_return_statement: list[str]) -> tuple[str, str]:
    """backgroundExecution.ts execCodeInBackgroundThread: the code sent, and the MIME type of the
    dummy display the answer updates (the answer comes as `<mime>.result`, or `<mime>.error`)."""
    mime = f"application/vnd.vscode.bg.execution.{counter}"
    body = "\n".join(line if i == 0 else f"        {line}" for i, line in enumerate(code_with_return_statement))
    code = f'''
def __jupyter_exec_background__():
    from IPython.display import display
    from threading import Thread
    from traceback import format_exc

    # First send a dummy response to get the display id.
    # Later we'll send the real response with the actual data.
    # And that can happen much later even after the execution completes,
    # as that response will be sent from a bg thread.
    output = display({{"{mime}": ""}}, raw=True, display_id=True)

    def do_implementation():
        {body}

    def bg_main():
        try:
            output.update({{"{mime}.result": do_implementation()}}, raw=True)
        except Exception as e:
            output.update({{"{mime}.error": format_exc()}}, raw=True)


    Thread(target=bg_main, daemon=True).start()


__jupyter_exec_background__()
del __jupyter_exec_background__
'''.strip()
    return code, mime


def startup(notebook: str) -> str:
    """kernel.ts gatherInternalStartupCode for a notebook (chat module, file name, jedi off, matplotlib
    inline and the light theme, wrapped by wrapPythonStartupBlock), joined by executeSilently."""
    chat = _helper("chatStartup.py")
    matplotlib = ["import matplotlib", "%matplotlib inline", "_VSCode_defaultMatplotlib_Params = dict(matplotlib.rcParams)",
                  "", "matplotlib.rcParams.update(_VSCode_defaultMatplotlib_Params)"]
    wrapped = ["try:", *(f"    {line}" for line in matplotlib), "except:",
               "    print('Failed to initialize matplotlib startup code. Matplotlib might be missing.')"]
    file = notebook.replace("\\", "\\\\")
    lines = [chat, f'__vsc_ipynb_file__ = "{file}"', "%config Completer.use_jedi = False", *wrapped]
    return silently("\n".join(lines))


def widgets_probe() -> str:
    """kernel.ts determineVersionOfIPyWidgets (dedent of its template)."""
    return silently('try:\n    import ipywidgets as _VSCODE_ipywidgets\n'
                    '    print("e976ee50-99ed-4aba-9b6b-9dcd5634d07d:IPyWidgets:" + _VSCODE_ipywidgets.__version__)\n'
                    '    del _VSCODE_ipywidgets\nexcept:\n    pass')


def first_output(outputs: list[dict]) -> Any:
    """What helpers.ts's callers read: the first output's text (a stream, or execute_result text/plain)."""
    for msg in outputs:
        if msg["msg_type"] == "stream":
            return msg["content"]["text"]
        if msg["msg_type"] == "execute_result":
            return msg["content"]["data"].get("text/plain")
        if msg["msg_type"] == "error":
            return msg["content"]["ename"]
    return None
