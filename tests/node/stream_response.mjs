// Streams one response through farebox with the Node openai package and prints what it saw as
// JSON: the event types, the text from the deltas, and the final response's usage.
// FAREBOX_URL is farebox's /v1 base; the attribution headers go with every request.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.FAREBOX_URL,
  apiKey: "sk-test-client",
  maxRetries: 0,
  defaultHeaders: { "X-Project-Id": "acme", "X-Agent-Id": "node-agent", "X-Session-Id": "node-run" },
});

const stream = client.responses.stream({ model: "gpt-4o-mini", input: "Say something in Node." });
const types = [];
let text = "";
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") text += event.delta;
}
const final = await stream.finalResponse();
console.log(JSON.stringify({ types, text, outputText: final.output_text, usage: final.usage }));
