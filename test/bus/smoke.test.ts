// temporary smoke test
import { connect, StringCodec } from 'nats';
import { Bus, NatsServer } from '../../src/bus';

it('smoke', async () => {
  const bus = new Bus();
  const server = new NatsServer(bus, { port: 0 });
  const { port } = await server.listen();
  const nc = await connect({ servers: `127.0.0.1:${port}` });
  const sc = StringCodec();
  const sub = nc.subscribe('foo.*');
  nc.publish('foo.bar', sc.encode('hi'));
  for await (const m of sub) { expect(sc.decode(m.data)).toBe('hi'); break; }
  bus.subscribe('svc', { callback: (m) => m.respond('pong:' + m.string()) });
  const r = await nc.request('svc', sc.encode('x'));
  expect(sc.decode(r.data)).toBe('pong:x');
  await expect(nc.request('none', sc.encode('x'))).rejects.toThrow(/503|no responders/i);
  const s2 = nc.subscribe('api', { callback: (_e, m) => m.respond(sc.encode('ok')) });
  await nc.flush();
  const r2 = await bus.request('api', 'q');
  expect(r2.string()).toBe('ok');
  s2.unsubscribe();
  await nc.drain();
  await server.close();
  await bus.close();
});
