// Actions shared by several pages (trigger with parameters, enable/disable, delete), each shown
// only when the user's role allows it.
import { del, patch, post, projectPath } from "./api.js";
import { confirmDialog, field, h, modal, parseKeyValues, toast } from "./dom.js";

export const jobPath = (project, name, rest = "") =>
  projectPath(project, `/jobs/${encodeURIComponent(name)}${rest}`);

export async function triggerJob(project, job) {
  const params = h("textarea", { name: "parameters", rows: 4, placeholder: "key=value, one a line" });
  const values = await modal(`Run ${job.name} now`, field("Parameters", params, "Optional; one key=value a line."), "Run now");
  if (values === null) return null;
  try {
    const run = await post(jobPath(project, job.name, "/runs"), { parameters: parseKeyValues(values.parameters) });
    toast(h("span", null, `Run ${run.id} of ${job.name} created: `, h("a", { href: `#/runs/${run.id}` }, "open it")), "ok");
    return run;
  } catch (err) {
    toast(err.message, "error");
    return null;
  }
}

export async function setEnabled(project, job, enabled) {
  try {
    const out = await patch(jobPath(project, job.name), { enabled });
    toast(`${job.name} ${enabled ? "enabled" : "disabled"}`, "ok");
    return out;
  } catch (err) {
    toast(err.message, "error");
    return null;
  }
}

export async function deleteJob(project, job) {
  const yes = await confirmDialog(`Delete ${job.name}?`, `The job ${job.name} and its schedule are removed. Its past runs stay, listed under the deleted job, until they expire (its last 100, at most 30 days).`);
  if (!yes) return false;
  try {
    await del(jobPath(project, job.name));
    toast(`${job.name} deleted`, "ok");
    return true;
  } catch (err) {
    toast(err.message, "error");
    return false;
  }
}
