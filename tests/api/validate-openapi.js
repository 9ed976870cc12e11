// Validates the server's OpenAPI description (GET /api-docs/openapi.json) with an OpenAPI
// implementation that is not ours (@apidevtools/swagger-parser: the official OpenAPI 3.0 JSON schema,
// every $ref resolved).
// Usage: node tests/api/validate-openapi.js <baseUrl>. Prints one line; exit code 1 on failure.
const SwaggerParser = require("@apidevtools/swagger-parser");

(async () => {
  const base = process.argv[2].replace(/\/$/, "");
  const response = await fetch(`${base}/api-docs/openapi.json`);
  if (!response.ok) throw new Error(`GET /api-docs/openapi.json answered ${response.status}`);
  const api = await SwaggerParser.validate(await response.json());
  const operations = Object.values(api.paths).reduce((n, item) => n + Object.keys(item).length, 0);
  console.log(`openapi: valid OpenAPI ${api.openapi}, ${Object.keys(api.paths).length} paths, ${operations} operations`);
})().catch((e) => {
  console.error(`openapi: INVALID: ${e.message}`);
  process.exit(1);
});
