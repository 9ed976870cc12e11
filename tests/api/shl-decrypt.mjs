// A SMART Health Link opened and decrypted by a JOSE implementation that is not ours (npm `jose`):
// 山田 太郎 (dev-person-yamada, examples/auth/clients.dev.json) pushes three documents, shares two with a
// passcode, and a recipient with no token resolves the shlink:/ payload, POSTs the manifest, fetches every
// file and decrypts it. Passes when the files are exactly those two documents with their bytes — for a link
// whose files are encrypted on request and for a pre-encrypted one (preEncrypt: encrypted at issue, no key kept).
// Usage: node tests/api/shl-decrypt.mjs <baseUrl>. Prints one line; exit code 1 on failure.
import { compactDecrypt, decodeProtectedHeader } from "jose";

const base = process.argv[2].replace(/\/$/, "");
const system = "urn:oid:1.2.392.100495.20.3.51.11312345678";
const fhir = "application/fhir+json";

async function token(client, secret) {
  const response = await fetch(`${base}/auth/token`, {
    method: "POST",
    headers: { Authorization: "Basic " + Buffer.from(`${client}:${secret}`).toString("base64"), "Content-Type": "application/x-www-form-urlencoded" },
    body: "grant_type=client_credentials",
  });
  if (!response.ok) throw new Error(`token for ${client}: ${response.status}`);
  return (await response.json()).access_token;
}

async function call(method, path, accessToken, body, headers = {}) {
  const response = await fetch(`${base}/${path}`, {
    method,
    headers: { Authorization: `Bearer ${accessToken}`, Accept: fhir, ...(body ? { "Content-Type": fhir } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

(async () => {
  // The Patient must be registered before the person takes a token (docs/consent.md, "The person's token").
  const institution = await token("kenshin-a", "kenshin-a-secret-change-me");
  await call("POST", "Patient", institution, { resourceType: "Patient", identifier: [{ system, value: "00012345" }], name: [{ family: "山田", given: ["太郎"] }] },
    { "If-None-Exist": `identifier=${system}|00012345` });
  const person = await token("dev-person-yamada", "dev-person-yamada-secret-change-me");
  const patient = (await call("GET", "Patient", person)).entry[0].resource.id;

  const documents = [];
  for (let i = 0; i < 3; i++) {
    const text = `健康診断結果のお知らせ ${i} ${Date.now()} ${Math.random()}`;
    const doc = await call("POST", "DocumentReference", person, {
      resourceType: "DocumentReference", status: "current",
      masterIdentifier: { system: "urn:ietf:rfc:3986", value: `urn:oid:2.999.${Date.now()}.${i}.${Math.floor(Math.random() * 1e9)}` },
      subject: { reference: `Patient/${patient}` },
      type: { coding: [{ system: "http://loinc.org", code: "53576-5" }], text: "健康診断結果報告書" },
      content: [{ attachment: { contentType: "text/plain; charset=utf-8", data: Buffer.from(text).toString("base64") } }],
    });
    documents.push({ id: doc.id, text });
  }
  const shared = documents.slice(0, 2);
  for (const preEncrypt of [false, true]) await shareAndOpen(patient, person, shared, preEncrypt);
})().catch((e) => {
  console.error(`shl: FAILED: ${e.message}`);
  process.exit(1);
});

async function shareAndOpen(patient, person, shared, preEncrypt) {
  const issued = await call("POST", `Patient/${patient}/$share`, person, {
    resourceType: "Parameters",
    parameter: [...shared.map((d) => ({ name: "documentReference", valueReference: { reference: `DocumentReference/${d.id}` } })),
      { name: "passcode", valueString: "1234" }, { name: "label", valueString: "主治医へ" }, { name: "preEncrypt", valueBoolean: preEncrypt }],
  });
  const shlink = issued.parameter.find((p) => p.name === "shlink").valueString;
  const payload = JSON.parse(Buffer.from(shlink.slice("shlink:/".length), "base64url").toString("utf8"));
  const key = Buffer.from(payload.key, "base64url");
  if (key.length !== 32 || payload.flag !== "P" || payload.url.length > 128) throw new Error(`payload ${JSON.stringify({ ...payload, key: "…" })}`);

  // The recipient: no token, only the link and the passcode.
  const manifest = await fetch(payload.url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ recipient: "Dr. 佐藤 (node jose)", passcode: "1234" }) });
  if (!manifest.ok) throw new Error(`manifest: ${manifest.status}`);
  const found = [];
  for (const file of (await manifest.json()).files) {
    const jwe = file.embedded ?? (await (await fetch(file.location)).text());
    const header = decodeProtectedHeader(jwe);
    if (header.alg !== "dir" || header.enc !== "A256GCM" || header.cty !== fhir) throw new Error(`header ${JSON.stringify(header)}`);
    const { plaintext } = await compactDecrypt(jwe, key);
    const bundle = JSON.parse(new TextDecoder().decode(plaintext));
    const doc = bundle.entry.find((e) => e.resource.resourceType === "DocumentReference").resource;
    const bytes = bundle.entry.find((e) => e.resource.resourceType === "Binary").resource.data;
    found.push({ id: doc.id, text: Buffer.from(bytes, "base64").toString("utf8") });
  }
  const sort = (list) => JSON.stringify([...list].sort((a, b) => a.id.localeCompare(b.id)));
  if (sort(found) !== sort(shared)) throw new Error(`files ${sort(found)} are not the shared documents ${sort(shared)}`);
  console.log(`shl: ${found.length} files${preEncrypt ? " (pre-encrypted at issue)" : ""} decrypted with npm jose are exactly the shared documents`);
}
