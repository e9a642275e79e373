import fs, { readFileSync, realpathSync } from 'node:fs';
import * as path from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import { loadLibc } from '../../src/util/libc';
import { mappedBytesPerRelease, noteMappedBytes, releaseMappedPages, watchMappedFile } from '../../src/util/mapped-memory';
import { makeTempDir, removeDir } from '../support/tmp';

/** Resident bytes of this process's mappings of `file`, from /proc/self/smaps. */
function residentBytesOf(file: string): number {
  const real = realpathSync(file);
  let inFile = false;
  let bytes = 0;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) {
      inFile = header[1] === real;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (inFile && rss) bytes += Number(rss[1]) * 1024;
  }
  return bytes;
}

const valueBytes = 1024 * 1024;
const values = 48;

function valueOf(i: number): Buffer {
  return Buffer.alloc(valueBytes, i + 1);
}

function readAll(env: RootDatabase<Buffer, number>): void {
  for (let i = 0; i < values; i++) {
    const read = env.getBinary(i);
    expect(read !== undefined && Buffer.compare(read, valueOf(i)) === 0).toBe(true);
  }
}

const onLinux = process.platform === 'linux' ? describe : describe.skip;

onLinux('mapped memory', () => {
  let dir: string;
  let env: RootDatabase<Buffer, number>;
  let file: string;

  beforeEach(async () => {
    dir = makeTempDir();
    // A map as large as the file will grow, as the log and the views open theirs: one mapping.
    env = open<Buffer, number>({ path: dir, encoding: 'binary', cache: false, compression: false, mapSize: 1024 ** 3 });
    await env.transaction(() => {
      for (let i = 0; i < values; i++) env.put(i, valueOf(i));
    });
    file = path.join(dir, 'data.mdb');
  });

  afterEach(async () => {
    await env.close();
    removeDir(dir);
  });

  it('can release pages on this machine (Linux with glibc)', () => {
    expect(loadLibc().available).toBe(true);
  });

  it('gives back the pages that reads brought in, and later reads see the same bytes', () => {
    const stop = watchMappedFile(file);
    try {
      readAll(env);
      expect(residentBytesOf(file)).toBeGreaterThanOrEqual(values * valueBytes);
      expect(releaseMappedPages()).toBe(1);
      expect(residentBytesOf(file)).toBeLessThan(valueBytes);
      readAll(env);
    } finally {
      stop();
    }
  });

  it('releases on its own once enough mapped reads have been counted', () => {
    const stop = watchMappedFile(file);
    try {
      releaseMappedPages();
      readAll(env);
      noteMappedBytes(mappedBytesPerRelease - 1);
      expect(residentBytesOf(file)).toBeGreaterThanOrEqual(values * valueBytes);
      noteMappedBytes(1);
      expect(residentBytesOf(file)).toBeLessThan(valueBytes);
    } finally {
      stop();
    }
  });

  it('leaves writes made before and after a release intact', async () => {
    const stop = watchMappedFile(file);
    try {
      readAll(env);
      releaseMappedPages();
      await env.put(values, Buffer.from('after the release'));
      releaseMappedPages();
      readAll(env);
      expect(env.getBinary(values)?.toString()).toBe('after the release');
    } finally {
      stop();
    }
  });

  it('lets reads go on when /proc/self/maps cannot be read (no file descriptor left): the pages only stay', () => {
    const stop = watchMappedFile(file);
    const read = fs.readFileSync;
    const spy = jest.spyOn(fs, 'readFileSync').mockImplementation(((path: fs.PathOrFileDescriptor, options?: unknown) => {
      if (path === '/proc/self/maps') throw Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' });
      return read(path, options as BufferEncoding);
    }) as typeof fs.readFileSync);
    try {
      readAll(env);
      expect(releaseMappedPages()).toBe(0);
      expect(() => noteMappedBytes(mappedBytesPerRelease)).not.toThrow();
      expect(residentBytesOf(file)).toBeGreaterThanOrEqual(values * valueBytes);
    } finally {
      spy.mockRestore();
      stop();
    }
  });

  it('keeps releasing a file opened twice until both opens have stopped watching', () => {
    const first = watchMappedFile(file);
    const second = watchMappedFile(file);
    first();
    first();
    readAll(env);
    expect(releaseMappedPages()).toBe(1);
    second();
    readAll(env);
    expect(releaseMappedPages()).toBe(0);
    expect(residentBytesOf(file)).toBeGreaterThanOrEqual(values * valueBytes);
  });
});
