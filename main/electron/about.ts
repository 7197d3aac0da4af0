// The About window's text: VMDesk's version and build, the daemon it talks to, and the versions underneath.
export interface AboutInput {
  version: string;
  build: string;
  versions: { electron?: string; chrome?: string; node?: string; v8?: string };
  daemon?: { app?: string; build?: string; pid?: number; version?: number };
}

/** Options for app.setAboutPanelOptions (shown by the About menu item on macOS and Linux). */
export function aboutPanelOptions(a: AboutInput): { applicationName: string; applicationVersion: string; version: string; credits: string; copyright: string } {
  const lines = [
    `Electron ${a.versions.electron ?? '?'}`,
    `Chromium ${a.versions.chrome ?? '?'}`,
    `Node ${a.versions.node ?? '?'} (V8 ${a.versions.v8 ?? '?'})`,
    a.daemon ? `Daemon: VMDesk ${a.daemon.app ?? '?'}, build ${a.daemon.build ?? '?'}, protocol ${a.daemon.version ?? '?'}, pid ${a.daemon.pid ?? '?'}` : 'Daemon: not connected',
  ];
  return {
    applicationName: 'VMDesk',
    applicationVersion: a.version,
    version: `build ${a.build}`,
    credits: lines.join('\n'),
    copyright: 'Copyright © VMDesk contributors',
  };
}
