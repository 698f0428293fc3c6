// A NATS JavaScript client (nats.js) on the other side of eventmicro, for the interop tests.
//   node interop.mjs call URL SERVICE ENDPOINT JSON   discover SERVICE with the JS service
//                                                     client, call ENDPOINT with a hand-built
//                                                     CloudEvent, print what happened as JSON
//   node interop.mjs serve URL                        run service "jsecho" until SIGTERM
import { connect, headers, StringCodec } from "nats";

const [mode, url, ...rest] = process.argv.slice(2);
const nc = await connect({ servers: url });
const sc = StringCodec();

async function collect(iterator) {
  const out = [];
  for await (const item of await iterator) out.push(item);
  return out;
}

if (mode === "call") {
  const [service, endpointName, body] = rest;
  const client = nc.services.client({ maxWait: 1000 });
  const pings = await collect(client.ping(service));
  const infos = await collect(client.info(service));
  const stats = await collect(client.stats(service));
  const endpoint = infos[0].endpoints.find((e) => e.name === endpointName);
  const h = headers();
  h.set("ce-specversion", "1.0");
  h.set("ce-id", "js-1");
  h.set("ce-source", "/nats.js");
  h.set("ce-type", endpoint.metadata["eventmicro.request"]);
  h.set("ce-datacontenttype", "application/json");
  const reply = await nc.request(endpoint.subject, sc.encode(body), { headers: h, timeout: 5000 });
  const bad = await nc.request(endpoint.subject, sc.encode("not json"), { headers: h, timeout: 5000 });
  console.log(JSON.stringify({
    pings: pings.map((p) => ({ name: p.name, id: p.id, version: p.version })),
    endpoint,
    statsEndpoints: stats[0].endpoints.map((e) => e.name),
    reply: { type: reply.headers?.get("ce-type"), body: JSON.parse(sc.decode(reply.data)) },
    bad: { code: bad.headers?.get("Nats-Service-Error-Code"), error: bad.headers?.get("Nats-Service-Error") },
  }));
  await nc.close();
} else if (mode === "serve") {
  const service = await nc.services.add({ name: "jsecho", version: "1.0.0" });
  service.addEndpoint("echo", (err, msg) => {
    const text = sc.decode(msg.data);
    if (text === "missing") {
      msg.respondError(404, "no such thing");
    } else {
      msg.respond(sc.encode(text.toUpperCase()));
    }
  });
  await nc.flush();
  console.log("ready");
  process.on("SIGTERM", async () => {
    await service.stop();
    await nc.close();
    process.exit(0);
  });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
