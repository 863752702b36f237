// Show every <time class="local-time"> in the reader's own time zone and language.
const format = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
for (const el of document.querySelectorAll("time.local-time")) {
  const when = new Date(el.getAttribute("datetime"));
  if (!Number.isNaN(when.getTime())) el.textContent = format.format(when);
}
