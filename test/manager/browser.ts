// Headless Chromium for the manager's page tests: Debian's chromium package (install-deps.sh
// installs it), driven by playwright-core, which downloads no browser of its own.
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Locator } from "playwright-core";

/** CHROMIUM is Debian's chromium. */
export const CHROMIUM = "/usr/bin/chromium";

/** launchBrowser starts headless Chromium (as root it needs --no-sandbox). */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: run scripts/install-deps.sh (Debian's chromium package)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    timeout: 120_000,
  });
}

/**
 * screenshotDir is where the tests leave their screenshots: test-output/manager beside the
 * compiled tests (dist/test-output/manager), or $KSPLICE_TEST_OUTPUT/manager.
 */
export function screenshotDir(): string {
  const root =
    process.env.KSPLICE_TEST_OUTPUT ?? fileURLToPath(new URL("../../test-output", import.meta.url));
  const dir = `${root.replace(/\/$/, "")}/manager`;
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** shown is an element's text as the browser renders it: what a person reads. */
export function shown(l: Locator): Promise<string> {
  // biome-ignore lint/performance/useDomNodeTextContent: the tests read the rendered text, as a person does
  return l.innerText();
}
