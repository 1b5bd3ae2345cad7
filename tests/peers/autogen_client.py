"""AutoGen's ACADynamicSessionsCodeExecutor, driven unchanged: the package probe, functions with
requirements, a code block that needs a missing package, execution and failure.

Run by tests/test_peer_clients.py; prints one line `PEER-RESULT <json>` with what the executor returned.
"""
import asyncio
import json
import os
import tempfile
import time

from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock, with_requirements
from autogen_ext.code_executors.azure import ACADynamicSessionsCodeExecutor
from azure.core.credentials import AccessToken


class PoolToken:
    """The pool's bearer token, as an azure-core token credential (the executor's documented parameter)."""

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(os.environ["REMOTE_KERNEL_TOKEN"], int(time.time()) + 3600)


@with_requirements(python_packages=["pandas"], global_imports=["pandas"])
def table_size() -> int:
    """The number of rows of a small DataFrame."""
    return len(pandas.DataFrame({"a": [1, 2, 3]}))  # noqa: F821 (imported by the executor)


async def main() -> dict:
    token = CancellationToken()
    answer: dict = {}
    with tempfile.TemporaryDirectory() as work:
        executor = ACADynamicSessionsCodeExecutor(pool_management_endpoint=os.environ["POOL_MANAGEMENT_ENDPOINT"],
                                                  credential=PoolToken(), functions=[table_size], work_dir=work)
        await executor.start()
        # the first execution runs the executor's package probe, then checks table_size's requirements
        # (get_available_packages before any execution fails in the executor itself: it has no token yet)
        ran = await executor.execute_code_blocks([CodeBlock(language="python", code="print(table_size())")], token)
        answer["function"] = {"exit_code": ran.exit_code, "output": ran.output}
        answer["packages"] = sorted(await executor.get_available_packages(token))
        missing = await executor.execute_code_blocks(
            [CodeBlock(language="python", code="!pip install surely-not-installed-package\nprint(1)")], token)
        answer["missing"] = {"exit_code": missing.exit_code, "output": missing.output}
        failed = await executor.execute_code_blocks([CodeBlock(language="python", code="print(undefined_name)")],
                                                    token)
        answer["failed"] = {"exit_code": failed.exit_code, "output": failed.output}
        await executor.stop()
    return answer


print("PEER-RESULT " + json.dumps(asyncio.run(main())))
