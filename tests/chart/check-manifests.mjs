// Checks rendered Kubernetes manifests against the upstream schemas: Kubernetes kinds with npm
// `kubernetes-models` (the API server's OpenAPI schemas), Istio kinds with
// `@kubernetes-models/istio` (Istio's CRD schemas). Every violation is printed, one per line:
//
//   <file>#<document> <apiVersion> <kind>/<name>: <path> <what is wrong>
//
// A kind with no schema, a document that is not YAML, or a key written twice is a violation too:
// nothing passes unchecked. Exit status: 0 every object is valid, 1 a violation, 2 bad usage.
//
//   node tests/chart/check-manifests.mjs rendered.yaml [more.yaml ...]
//   helm template ... | node tests/chart/check-manifests.mjs -
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

/** The package that models `apiVersion`: Istio's groups end in istio.io, the rest is Kubernetes. */
function modelPath(apiVersion, kind) {
  const pkg = apiVersion.split('/')[0].endsWith('.istio.io') ? '@kubernetes-models/istio' : 'kubernetes-models';
  return `${pkg}/${apiVersion}/${kind}`;
}

async function modelOf(apiVersion, kind) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^[A-Za-z0-9]+$/.test(kind)) return undefined;
  try {
    const module = await import(modelPath(apiVersion, kind));
    return module[kind];
  } catch (err) {
    if (err.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED' || err.code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw err;
  }
}

/** The violations of one parsed document, as `path message` strings. */
async function violations(object) {
  if (object === null || typeof object !== 'object' || Array.isArray(object)) return ['(document) is not a mapping'];
  const Model = await modelOf(object.apiVersion, object.kind);
  if (!Model) return [`(document) no schema for apiVersion ${JSON.stringify(object.apiVersion)} kind ${JSON.stringify(object.kind)}`];
  try {
    new Model(object).validate();
    return [];
  } catch (err) {
    if (!Array.isArray(err.errors)) throw err;
    return err.errors.map((e) => {
      const detail = e.params && e.keyword === 'enum' ? ` (${e.params.allowedValues.join(', ')})` : '';
      return `${e.instancePath || '/'} ${e.message}${detail}`;
    });
  }
}

async function main(files) {
  if (files.length === 0) {
    console.error('usage: check-manifests.mjs FILE.yaml [...] (- for standard input)');
    return 2;
  }
  let objects = 0;
  let failures = 0;
  for (const file of files) {
    const text = readFileSync(file === '-' ? 0 : file, 'utf8');
    // YAML 1.1, as the API server reads manifests (octal 0440, yes/no booleans).
    const documents = parseAllDocuments(text, { version: '1.1', uniqueKeys: true });
    for (const [index, document] of documents.entries()) {
      const place = `${file}#${index}`;
      if (document.errors.length > 0) {
        for (const error of document.errors) console.log(`${place}: not YAML: ${error.message.split('\n')[0]}`);
        failures += document.errors.length;
        continue;
      }
      const object = document.toJS();
      if (object === null || object === undefined) continue;
      objects += 1;
      const name = `${object.apiVersion} ${object.kind}/${object.metadata?.name ?? '?'}`;
      for (const problem of await violations(object)) {
        console.log(`${place} ${name}: ${problem}`);
        failures += 1;
      }
    }
  }
  console.log(failures === 0 ? `ok: ${objects} objects valid` : `${failures} violations in ${objects} objects`);
  return failures === 0 ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
