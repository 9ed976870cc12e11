// Runs the README's curl walk-throughs exactly as written (only http://127.0.0.1:8080 replaced by the
// server under test), in order, each in a fresh folder, and checks what they print: a README that a
// reader copy-pastes must work. The server must have the development clients
// (examples/auth/clients.dev.json), as scripts/test.sh starts it.
// Usage: node tests/api/readme-walkthroughs.js <baseUrl>. One line per walk-through on stderr; the last
// line on stdout is "<passed> <failed>"; exit code 1 when one failed.
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

// README heading → what its first ```sh block prints, in this order (each a regular expression on stdout).
const walkthroughs = [
  ["## IHE MHD walk-through (curl)", [/"status":"201 Created"/, /ITI-68: identical bytes/]],
  ["## Consent walk-through (curl)", [
    /^Practitioner\/[0-9a-f-]{36}$/m, /^Patient\/[0-9a-f-]{36}$/m,
    /^"total":0$/m,                                  // no Consent: the physician finds nothing
    /^Consent\/[0-9a-f-]{36}$/m,
    /^"total":[1-9][0-9]*$/m, /^ITI-68: 200 /m,      // under the Consent
    /^revoked: 200$/m, /^"total":0$/m, /^physician, revoked: 404$/m,
    /^operator: 404$/m, /^operator, break-glass: 200$/m, /"code":"BTG"}\],"text":"emergency admission/,
  ]],
  ["## 健診事後措置 and 両立支援 (workflows)", [
    /^worker: Patient\/[0-9a-f-]{36}$/m,
    /^detailed-exam: Task\/[0-9a-f-]{36}$/m,             // opened by the HS037 judged 要精密検査
    /"name":"open","valueInteger":[1-9]/,              // on the occupational physician's worklist
    /^404$/m,                                          // the employer never reads the checkup
    /"resourceType":"DocumentReference","id":"[0-9a-f-]{36}"/, // the hospital's result, accepted
  ]],
];

const base = process.argv[2].replace(/\/$/, "");
const repoRoot = path.join(__dirname, "..", "..");
const readme = fs.readFileSync(path.join(repoRoot, "README.md"), "utf8");
let passed = 0, failed = 0;
for (const [heading, expected] of walkthroughs) {
  const start = readme.indexOf("\n" + heading + "\n");
  const block = start < 0 ? null : /```sh\n([\s\S]*?)\n```/.exec(readme.slice(start));
  let problem = block ? null : "section or its ```sh block not found";
  if (block) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "phrfhir-readme-"));
    // Files the README names relative to the repository (examples/…) are found from the fresh folder too.
    const script = block[1].replaceAll("http://127.0.0.1:8080", base).replaceAll(" examples/", " " + repoRoot + "/examples/");
    const run = spawnSync("bash", ["-c", script],
      { cwd: dir, encoding: "utf8", timeout: 180000 });
    fs.rmSync(dir, { recursive: true, force: true });
    // Each expectation is looked for after the previous one's match: the order is part of the story.
    let rest = run.stdout || "";
    for (const pattern of expected) {
      const m = pattern.exec(rest);
      if (!m) { problem = `expected ${pattern} next; output:\n${run.stdout}\n${run.stderr}`; break; }
      rest = rest.slice(m.index + m[0].length);
    }
    if (!problem && run.status !== 0) problem = `exit code ${run.status}: ${run.stderr}`;
  }
  if (problem) failed++; else passed++;
  console.error(`readme: ${heading.replace(/^#+ /, "")}: ${problem ? "FAILED: " + problem : "ok"}`);
}
console.log(`${passed} ${failed}`);
process.exit(failed ? 1 : 0);
