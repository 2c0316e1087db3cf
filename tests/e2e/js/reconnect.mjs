// The JS client's own reconnect: streams a run through whatever sits at <url> (the tests
// put a connection-killing proxy there) and prints every part it yielded.
//
// Usage: node reconnect.mjs <server-url> <thread-id> <ticks> <pause-seconds>
// Prints {"parts": [{id, event, data}, ...]} on stdout.
import { Client } from "@langchain/langgraph-sdk";

const [url, threadId, ticks, pause] = process.argv.slice(2);
if (!url || !threadId) {
  console.error("usage: node reconnect.mjs <server-url> <thread-id> <ticks> <pause-seconds>");
  process.exit(2);
}

const client = new Client({ apiUrl: url, apiKey: null });

async function main() {
  const parts = [];
  for await (const part of client.runs.stream(threadId, "ticker", {
    input: { n: Number(ticks), pause: Number(pause) },
    streamMode: ["custom", "values"],
  })) {
    parts.push({ id: part.id ?? null, event: part.event, data: part.data });
  }
  process.stdout.write(JSON.stringify({ parts }));
}

main().catch((error) => {
  console.error(error?.stack ?? String(error));
  process.exit(1);
});
