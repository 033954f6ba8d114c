// Run by validate.py (validate.sh): node validate_keda.mjs NPM_PREFIX < objects.json
// Validates KEDA objects with the npm package @kubernetes-models/keda, whose validators are
// generated from KEDA's Go API types (keda.sh/v1alpha1): field types, required fields and enums.
// It does not reject unknown fields; validate.py checks those. Prints {"overlay/Kind/name": "valid"
// or the error}.
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";

const prefix = process.argv[2];
const model = (kind) =>
  import(pathToFileURL(join(prefix, "node_modules/@kubernetes-models/keda/keda.sh/v1alpha1", `${kind}.js`)).href);

const objects = JSON.parse(readFileSync(0, "utf8"));
const out = {};
for (const o of objects) {
  const overlay = o._overlay;
  delete o._overlay;
  const key = `${overlay}/${o.kind}/${o.metadata.name}`;
  try {
    const { [o.kind]: Model } = await model(o.kind);
    new Model(o).validate();
    out[key] = "valid";
  } catch (e) {
    out[key] = String(e.message || e);
  }
}
process.stdout.write(JSON.stringify(out));
