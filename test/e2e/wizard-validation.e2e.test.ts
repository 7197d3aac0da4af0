// The wizard refuses bad input inline, with the same zod rules the server applies, before anything is sent.
import { describe, expect, it } from 'vitest';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { WizardPage } from './pages/WizardPage.js';

const e2e = useHarness();

describe('wizard validation', () => {
  it('rejects an empty name, "../x" and 0 CPUs inline and creates nothing', { timeout: 120_000 }, async () => {
    const main = new MainWindowPage(e2e.h.page);
    const wizard = new WizardPage(e2e.h.page);
    await main.open(e2e.h.server.url);
    await main.toolbar('new').click();
    await wizard.waitForStep('name');

    // Empty name: Next stays on the page and says why.
    await wizard.setName('');
    await wizard.next();
    await wizard.waitForStep('name');
    expect(await wizard.error('name').textContent()).toMatch(/must not be empty/);

    // Path tricks in the name are refused as the user types.
    await wizard.setName('../x');
    expect(await wizard.error('name').textContent()).toMatch(/name may contain|must not contain/);
    await e2e.h.shot('20-wizard-bad-name');
    await wizard.next();
    await wizard.waitForStep('name');

    await wizard.setName('valid-name');
    await wizard.error('name').waitFor({ state: 'detached' });
    await wizard.next();
    await wizard.waitForStep('media');
    await e2e.h.page.getByTestId('media-none').check();
    await wizard.next();
    await wizard.waitForStep('hardware');

    // 0 CPUs: the schema's minimum.
    await wizard.hardware({ cpus: 0 });
    expect(await wizard.error('cpus').textContent()).toMatch(/at least 1 CPU/);
    await e2e.h.shot('21-wizard-zero-cpus');
    await wizard.next();
    await wizard.waitForStep('hardware');

    // Memory past the host's total is an error too.
    await wizard.hardware({ cpus: 1, memoryMiB: 99_999_999 });
    await wizard.error('memoryMiB').waitFor();
    await wizard.hardware({ memoryMiB: 128 });
    await wizard.error('memoryMiB').waitFor({ state: 'detached' });

    await e2e.h.page.getByTestId('wizard-cancel').click();
    await main.emptyState.waitFor();
    expect(await e2e.h.call('vm.list', {})).toEqual([]);
  });

  it('says at its own page that an ISO does not exist, expands ~, and shows a server refusal with its details', { timeout: 60_000 }, async () => {
    const main = new MainWindowPage(e2e.h.page);
    const wizard = new WizardPage(e2e.h.page);
    await main.open(e2e.h.server.url);
    await main.toolbar('new').click();
    await wizard.setName('missing-iso');
    await wizard.next();
    await e2e.h.page.getByTestId('media-iso').check();
    await e2e.h.page.getByTestId('field-iso').fill('/nonexistent/installer.iso');
    // Refused on the media page (asked of the daemon), not after four more pages.
    await wizard.next();
    await wizard.waitForStep('media');
    expect(await wizard.error('iso').textContent()).toMatch(/does not exist/);

    // ~/ is the daemon user's home: shown expanded once checked.
    const { homedir } = await import('node:os');
    await e2e.h.page.getByTestId('field-iso').fill('~/no-such-installer.iso');
    await wizard.next();
    await wizard.waitForStep('media');
    expect(await e2e.h.page.getByTestId('field-iso').inputValue()).toBe(`${homedir()}/no-such-installer.iso`);
    expect(await wizard.error('iso').textContent()).toMatch(/does not exist/);

    // A file that exists but is no disc image (a qcow2 header under an .iso name): the daemon's image gate
    // refuses it at Create, and the wizard shows its words with a details disclosure.
    const { writeFileSync } = await import('node:fs');
    const fake = `${e2e.h.home}/disguised.iso`;
    writeFileSync(fake, Buffer.concat([Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]), Buffer.alloc(4096)]));
    await e2e.h.page.getByTestId('field-iso').fill(fake);
    for (let i = 0; i < 4; i++) await wizard.next();
    await wizard.waitForStep('summary');
    await e2e.h.page.getByTestId('wizard-create').click();
    const err = e2e.h.page.getByTestId('wizard').getByTestId('error');
    await err.waitFor();
    expect(await err.getByTestId('error-message').textContent()).toMatch(/ISO/);
    await err.locator('summary').click();
    expect(await err.textContent()).toContain('EINVAL');
    await e2e.h.shot('22-wizard-server-error');
  });
});
