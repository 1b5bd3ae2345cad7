"""Semantic Kernel's SessionsPythonTool, driven unchanged: execute, upload (after an execution), list, download.

Run by tests/test_peer_clients.py with POOL_MANAGEMENT_ENDPOINT, REMOTE_KERNEL_TOKEN, SSL_CERT_FILE and
WORK_DIR set; prints one line `PEER-RESULT <json>` with what the client returned to its caller.
"""
import asyncio
import json
import os
from pathlib import Path

from semantic_kernel.core_plugins.sessions_python_tool.sessions_python_plugin import SessionsPythonTool


async def main() -> dict:
    token = os.environ["REMOTE_KERNEL_TOKEN"]
    work = Path(os.environ["WORK_DIR"])
    local = work / "numbers.csv"
    local.write_text("a,b\n1,2\n3,4\n")
    tool = SessionsPythonTool(pool_management_endpoint=os.environ["POOL_MANAGEMENT_ENDPOINT"],
                              auth_callback=lambda: token, enable_dangerous_file_uploads=True,
                              allowed_upload_directories=[str(work)])
    answer: dict = {}
    answer["execute"] = await tool.execute_code("x = 6\nprint('hello')\nx * 7")
    uploaded = await tool.upload_file(local_file_path=str(local))
    answer["upload"] = {"filename": uploaded.filename, "full_path": uploaded.full_path, "size": uploaded.size_in_bytes}
    answer["list"] = sorted(f.filename for f in await tool.list_files())
    answer["read_by_code"] = await tool.execute_code("open('/mnt/data/numbers.csv').read().count('\\n')")
    answer["download"] = (await tool.download_file(remote_file_name="numbers.csv")).read().decode()
    answer["failure"] = await tool.execute_code("1/0")
    return answer


print("PEER-RESULT " + json.dumps(asyncio.run(main())))
