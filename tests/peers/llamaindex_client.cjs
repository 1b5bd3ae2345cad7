// LlamaIndex TS's AzureDynamicSessionTool (@llamaindex/azure), driven unchanged: the legacy python/execute call,
// an image result, upload and list. Prints one line `PEER-RESULT <json>` with what the tool returned.
const { AzureDynamicSessionTool } = require("@llamaindex/azure");

async function main() {
  const token = process.env.REMOTE_KERNEL_TOKEN;
  const tool = new AzureDynamicSessionTool({
    poolManagementEndpoint: process.env.POOL_MANAGEMENT_ENDPOINT,
    azureADTokenProvider: async () => token,
  });
  const answer = {};
  answer.value = await tool.call({ code: "x = 6\nprint('hello')\nx * 7" });
  answer.none = await tool.call({ code: "x = None\nx" });  // the tool read `result` of null and failed
  answer.plot = await tool.call({ code: "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()" });
  answer.upload = await tool.uploadFile({ data: new Blob(["hello file"]), remoteFilename: "hello.txt" });
  answer.list = (await tool.listFiles()).map((f) => f.filename).sort();
  return answer;
}

main().then((answer) => console.log("PEER-RESULT " + JSON.stringify(answer)),
  (error) => { console.error(error); process.exit(1); });
