// Imported before the package. With `?throttle=MS` it stands in for Chrome's intensive
// throttling of a hidden page (chained timers wake at most once a minute): every setTimeout
// of the page fires MS late. A Worker's timers are not affected, as in Chrome. With
// `?noworker` the page has no `Worker`, so the package falls back to the page's setTimeout.
//
// The test's own waits use `onTime`, the untouched setTimeout.
export const onTime = globalThis.setTimeout.bind(globalThis);

const query = new URLSearchParams(globalThis.location.search);
const late = Number(query.get("throttle") ?? 0);
if (late > 0) {
  globalThis.setTimeout = (f, ms, ...args) => onTime(f, (Number(ms) || 0) + late, ...args);
}
if (query.has("noworker")) {
  delete globalThis.Worker;
}
