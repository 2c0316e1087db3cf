// Drives runlane with the official JS client (@langchain/langgraph-sdk) under Node.
//
// Usage: node stream_and_join.mjs <server-url>
//
// 1. creates a thread;
// 2. client.runs.stream(threadId, "agent", { streamMode: ["values", "messages-tuple"] }),
//    collecting every event;
// 3. client.runs.joinStream(threadId, runId, { lastEventId }) after several cut points
//    of the finished run;
// 4. a live cut: streams a paced run, stops reading after a few events (aborting the
//    request), then resumes with joinStream from the last id it saw.
// Prints one JSON object on stdout; the Python test checks it. Exits non-zero on error.
import { Client } from "@langchain/langgraph-sdk";

const url = process.argv[2];
if (!url) {
  console.error("usage: node stream_and_join.mjs <server-url>");
  process.exit(2);
}

const client = new Client({ apiUrl: url, apiKey: null });
const simplify = (part) => ({ id: part.id ?? null, event: part.event, data: part.data });

async function collect(iterable, limit) {
  const parts = [];
  for await (const part of iterable) {
    parts.push(simplify(part));
    if (limit !== undefined && parts.length >= limit) break;
  }
  return parts;
}

async function main() {
  const thread = await client.threads.create({ metadata: { from: "js" } });
  const threadId = thread.thread_id;

  const streamed = await collect(
    client.runs.stream(threadId, "agent", {
      input: { messages: [{ role: "user", content: "hello from node" }] },
      streamMode: ["values", "messages-tuple"],
    }),
  );
  const runId = streamed[0]?.data?.run_id;

  const joins = {};
  for (const k of [1, 2, Math.floor(streamed.length / 2), streamed.length - 1]) {
    const lastEventId = streamed[k - 1].id;
    joins[k] = await collect(client.runs.joinStream(threadId, runId, { lastEventId }));
  }
  const replay = await collect(client.runs.joinStream(threadId, runId, { lastEventId: "-1" }));

  // live cut: abort the request after 3 events of a paced run, then resume
  const liveThread = (await client.threads.create()).thread_id;
  const controller = new AbortController();
  const head = await collect(
    client.runs.stream(liveThread, "ticker", {
      input: { n: 10, pause: 0.05 },
      streamMode: ["custom"],
      signal: controller.signal,
    }),
    3,
  );
  controller.abort();
  const liveRunId = head[0].data.run_id;
  const tail = await collect(
    client.runs.joinStream(liveThread, liveRunId, { lastEventId: head[head.length - 1].id }),
  );
  const liveFull = await collect(
    client.runs.joinStream(liveThread, liveRunId, { lastEventId: "-1" }),
  );
  const state = await client.threads.getState(threadId);

  process.stdout.write(
    JSON.stringify({
      threadId,
      runId,
      streamed,
      joins,
      replay,
      live: { threadId: liveThread, runId: liveRunId, head, tail, full: liveFull },
      finalValues: state.values,
    }),
  );
}

main().catch((error) => {
  console.error(error?.stack ?? String(error));
  process.exit(1);
});
