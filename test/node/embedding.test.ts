// Runs the README's embedding example exactly as written, as a user would: `require('loomdb')`
// from a separate Node process (the package resolves itself through its `exports`).

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { openNode } from '../../src/node';

const root = path.join(__dirname, '../..');

function readmeExample(): string {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Embedding'));
  const match = /```js\n([\s\S]*?)```/.exec(section);
  if (!match) throw new Error('README has no embedding example');
  return match[1];
}

describe('embedding', () => {
  it('runs the README example as written', () => {
    const example = readmeExample();
    expect(example.split('\n').filter((l) => l.trim() !== '').length).toBeLessThanOrEqual(12);
    const result = spawnSync(process.execPath, ['-e', example], { cwd: root, encoding: 'utf8', timeout: 30_000 });
    expect(result.stderr).toBe('');
    expect(result.stdout).toBe('2 $EV.orders.order.created\n1 {"name":"Alice"}\n');
    expect(result.status).toBe(0);
  });

  it('opens a persistent node with network doors on free ports and reopens it', async () => {
    const data = path.join(require('node:os').tmpdir(), `loom-embed-${process.pid}`);
    let node = await openNode({ data, doors: true });
    try {
      expect(node.ports.http).toBeGreaterThan(0);
      expect(node.ports.nats).toBeGreaterThan(0);
      await node.kv.put('b', 'k', 'v');
      const response = await fetch(`http://127.0.0.1:${node.ports.http}/v1/kv/b/k`);
      expect(await response.text()).toBe('v');
    } finally {
      await node.close();
    }
    node = await openNode({ data });
    try {
      expect(node.ports).toEqual({});
      expect(Buffer.from((await node.kv.get('b', 'k')).value).toString()).toBe('v');
    } finally {
      await node.close();
      require('node:fs').rmSync(data, { recursive: true, force: true });
    }
  });

  it('passes the objects limits through to uploads', async () => {
    const node = await openNode({ memory: true, objects: { chunkBytes: 4096, objectBytesMax: 10_000 } });
    try {
      const info = await node.db.objects.put('files', 'a', Buffer.alloc(9000, 1));
      expect(info).toMatchObject({ chunkBytes: 4096, chunkCount: 3 });
      await expect(node.db.objects.put('files', 'b', Buffer.alloc(10_001, 1))).rejects.toMatchObject({ code: 'TOO_LARGE' });
    } finally {
      await node.close();
    }
  });

  it('finishes close() as the last step of a program that nothing else keeps alive', () => {
    // The SQL query process is unref'd while idle; close() must still wait for it to exit.
    const script = `
      const { openNode } = require(${JSON.stringify(path.resolve(__dirname, '../../dist'))});
      (async () => {
        const node = await openNode({ memory: true });
        await node.kv.put('b', 'k', 'v');
        await node.close();
        process.stdout.write('closed');
      })();`;
    const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(result.stdout).toBe('closed');
    expect(result.status).toBe(0);
  });
});
