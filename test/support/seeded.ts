// A small seeded PRNG for tests that must be reproducible from a seed: the same mulberry32 that
// Raft uses for its randomized election timeouts.

export { seededRandom } from '../../src/eventlog/raft';
