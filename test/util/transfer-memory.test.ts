import { collectGarbageOnRelease, noteTransferEnded, noteTransferred, quietMsBeforeRelease, releaseTransferMemory, transferBytesPerRelease, transferBytesPerReleaseAtEnd } from '../../src/util/transfer-memory';

describe('memory given back after transfers', () => {
  let collections: number;

  beforeEach(() => {
    jest.useFakeTimers();
    collections = 0;
    collectGarbageOnRelease(() => collections++);
    releaseTransferMemory();
    collections = 0;
  });

  afterEach(() => {
    jest.useRealTimers();
  });

  it('collects once enough has moved and then nothing for a moment', () => {
    noteTransferred(transferBytesPerRelease);
    jest.advanceTimersByTime(quietMsBeforeRelease - 1);
    expect(collections).toBe(0);
    jest.advanceTimersByTime(1);
    expect(collections).toBe(1);
    jest.advanceTimersByTime(10 * quietMsBeforeRelease);
    expect(collections).toBe(1);
  });

  it('waits while bytes keep moving', () => {
    for (let i = 0; i < 20; i++) {
      noteTransferred(transferBytesPerRelease / 4);
      jest.advanceTimersByTime(quietMsBeforeRelease / 2);
    }
    expect(collections).toBe(0);
    jest.advanceTimersByTime(quietMsBeforeRelease);
    expect(collections).toBe(1);
  });

  it('gives back at the end of a transfer after a large one, without waiting for quiet, once', () => {
    noteTransferred(transferBytesPerReleaseAtEnd);
    noteTransferEnded();
    expect(collections).toBe(0);
    // In the next turn, once the transfer's last reply has gone out; other traffic may go on.
    jest.advanceTimersByTime(1);
    noteTransferred(1024);
    expect(collections).toBe(1);
    noteTransferEnded();
    jest.advanceTimersByTime(10 * quietMsBeforeRelease);
    expect(collections).toBe(1);
  });

  it('waits for quiet at the end of a transfer after less than that', () => {
    noteTransferred(transferBytesPerReleaseAtEnd - 1);
    noteTransferEnded();
    jest.advanceTimersByTime(1);
    expect(collections).toBe(0);
    jest.advanceTimersByTime(quietMsBeforeRelease);
    expect(collections).toBe(1);
  });

  it('leaves a node that moved little alone', () => {
    noteTransferred(transferBytesPerRelease - 1);
    jest.advanceTimersByTime(10 * quietMsBeforeRelease);
    expect(collections).toBe(0);
  });
});
