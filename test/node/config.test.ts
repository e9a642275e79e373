import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadConfig } from '../../src/node';
import { LoomError } from '../../src/util';
import { makeTempDir, removeDir } from '../support/tmp';

function configError(fn: () => unknown): LoomError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LoomError);
    expect((err as LoomError).code).toBe('INVALID_ARGUMENT');
    return err as LoomError;
  }
  throw new Error('expected a configuration error');
}

describe('node configuration', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir();
  });
  afterEach(() => removeDir(dir));

  it('refuses a chunk size whose log entries would not fit entryBytesMax, naming both sources', () => {
    expect(() => loadConfig({ flags: { 'chunk-bytes': String(1024 * 1024), 'entry-bytes-max': String(1024 * 1024) } })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', details: { field: 'chunkBytes' }, message: expect.stringMatching(/over entryBytesMax 1048576 \(from flag --entry-bytes-max\)/) }),
    );
    expect(loadConfig({ flags: { 'chunk-bytes': String(1024 * 1024) } }).chunkBytes).toBe(1024 * 1024);
  });

  it('defaults to the CONTRACT.md ports on 127.0.0.1 with ./data', () => {
    expect(loadConfig({})).toMatchObject({
      data: './data',
      host: '127.0.0.1',
      natsPort: 4222,
      grpcPort: 50051,
      httpPort: 8080,
      service: 'default',
      id: '001',
      sync: 'full',
      role: 'db',
      peers: [],
    });
  });

  it('merges file < environment < flags', () => {
    const file = path.join(dir, 'loom.json');
    writeFileSync(file, JSON.stringify({ httpPort: 1000, natsPort: 1001, grpcPort: 1002 }));
    const config = loadConfig({ file, env: { LOOM_NATS_PORT: '2001', LOOM_GRPC_PORT: '2002' }, flags: { 'grpc-port': '3002' } });
    expect([config.httpPort, config.natsPort, config.grpcPort]).toEqual([1000, 2001, 3002]);
  });

  it('parses peers from ID=HOST:PORT lists', () => {
    const config = loadConfig({ flags: { peers: '1=127.0.0.1:7000,2=127.0.0.1:7001' } });
    expect(config.peers).toEqual([
      { id: 1, host: '127.0.0.1', port: 7000 },
      { id: 2, host: '127.0.0.1', port: 7001 },
    ]);
    expect(configError(() => loadConfig({ flags: { peers: '1=nohostport' } })).message).toMatch(/peers.*ID=HOST:PORT/);
  });

  it('takes the chunk collection age and interval from --orphan-chunk-age-ms and --chunk-gc-interval-ms, at least 1 s and 100 ms', () => {
    expect(loadConfig({})).toMatchObject({ orphanChunkAgeMs: 24 * 3600 * 1000, chunkGcIntervalMs: 60_000 });
    expect(loadConfig({ flags: { 'orphan-chunk-age-ms': '5000', 'chunk-gc-interval-ms': '250' } })).toMatchObject({ orphanChunkAgeMs: 5000, chunkGcIntervalMs: 250 });
    expect(() => loadConfig({ flags: { 'orphan-chunk-age-ms': '10' } })).toThrow(/orphanChunkAgeMs/);
    expect(() => loadConfig({ flags: { 'chunk-gc-interval-ms': '0' } })).toThrow(/chunkGcIntervalMs/);
  });

  it('takes the objects limits from --chunk-bytes and --object-bytes-max, within the chunk bounds', () => {
    expect(loadConfig({})).toMatchObject({ chunkBytes: 256 * 1024, objectBytesMax: 5 * 1024 ** 3 });
    expect(loadConfig({ flags: { 'chunk-bytes': '65536', 'object-bytes-max': '1000' } })).toMatchObject({ chunkBytes: 65536, objectBytesMax: 1000 });
    expect(configError(() => loadConfig({ env: { LOOM_CHUNK_BYTES: String(2 * 1024 * 1024) } })).message).toMatch(/chunkBytes/);
  });

  it('names the field, the source and the expected form of a bad value', () => {
    const err = configError(() => loadConfig({ env: { LOOM_HTTP_PORT: 'eighty' } }));
    expect(err.message).toMatch(/httpPort = "eighty" \(from environment LOOM_HTTP_PORT\): expected a port number/);
    expect(configError(() => loadConfig({ flags: { sync: 'sometimes' } })).message).toMatch(/sync .* flag --sync/);
  });

  it('refuses an unknown field in the config file, naming it', () => {
    const file = path.join(dir, 'loom.json');
    writeFileSync(file, JSON.stringify({ httpPort: 1, httpPrt: 2 }));
    expect(configError(() => loadConfig({ file })).message).toMatch(/unknown configuration field "httpPrt" \(from config file/);
  });

  it('refuses a config file that is not JSON', () => {
    const file = path.join(dir, 'loom.json');
    writeFileSync(file, 'httpPort: 1');
    expect(configError(() => loadConfig({ file })).message).toMatch(/cannot read config file/);
  });
});
