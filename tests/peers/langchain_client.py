"""LangChain's SessionsPythonREPLTool and SessionsBashTool (langchain-azure-dynamic-sessions), driven unchanged.

Argument: "python" (a PythonLTS pool) or "bash" (a Shell pool). Prints one line `PEER-RESULT <json>` with
what the tools returned to their caller.
"""
import io
import json
import os
import sys

from langchain_azure_dynamic_sessions import SessionsBashTool, SessionsPythonREPLTool


def python(endpoint: str, token: str) -> dict:
    tool = SessionsPythonREPLTool(pool_management_endpoint=endpoint, access_token_provider=lambda: token)
    answer = {"value": json.loads(tool.invoke("x = 6\nprint('hello')\nx * 7")),
              "list": json.loads(tool.invoke("[1, 2, 3]"))}
    plot = tool.invoke({"args": {"python_code": "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"},
                        "id": "1", "name": tool.name, "type": "tool_call"})
    artifact = json.dumps(plot.artifact)  # the whole answer, kept beside what the model reads
    answer["plot"] = {"content": json.loads(plot.content), "artifact_bytes": len(artifact),
                      "png_copies": artifact.count("iVBORw0KGgo")}
    uploaded = tool.upload_file(data=io.BytesIO(b"hello file"), remote_file_path="hello.txt")
    answer["upload"] = {"filename": uploaded.filename, "size": uploaded.size_in_bytes}
    answer["download"] = tool.download_file(remote_file_path="hello.txt").read().decode()
    answer["files"] = sorted(f.filename for f in tool.list_files())
    return answer


def bash(endpoint: str, token: str) -> dict:
    tool = SessionsBashTool(pool_management_endpoint=endpoint, access_token_provider=lambda: token)
    answer = {"echo": json.loads(tool.invoke("echo hello; echo oops >&2")),
              "exit": json.loads(tool.invoke("exit 3")),
              "user": json.loads(tool.invoke("id -u")),
              "network": json.loads(tool.invoke("getent hosts example.com || echo no-network"))}
    uploaded = tool.upload_file(data=io.BytesIO(b"one\ntwo\n"), remote_file_path="lines.txt")
    answer["upload"] = {"filename": uploaded.filename, "size": uploaded.size_in_bytes}
    answer["count"] = json.loads(tool.invoke("wc -l < /mnt/data/lines.txt"))
    answer["download"] = tool.download_file(remote_file_path="lines.txt").read().decode()
    answer["files"] = sorted(f.filename for f in tool.list_files())
    return answer


endpoint, token = os.environ["POOL_MANAGEMENT_ENDPOINT"], os.environ["REMOTE_KERNEL_TOKEN"]
print("PEER-RESULT " + json.dumps((python if sys.argv[1] == "python" else bash)(endpoint, token)))
