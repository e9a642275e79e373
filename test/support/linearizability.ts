// A linearizability checker: Wing & Gong's search with Lowe's memoization, partitioned per key,
// as Porcupine does it. A history is a list of operations with call and return times; an
// operation that never returned (its outcome unknown) has ret = Infinity.

export interface Operation<I, O> {
  clientId: number;
  input: I;
  output: O;
  call: number;
  ret: number;
}

export interface Model<S, I, O> {
  init(): S;
  /** Whether `input` with the observed `output` is legal in `state`, and the state after it. */
  step(state: S, input: I, output: O): { ok: boolean; state: S };
  /** Splits a history into independent sub-histories (e.g. one per key); default: one. */
  partition?(ops: Operation<I, O>[]): Operation<I, O>[][];
  /** A string identifying a state, for the memo of (linearized set, state) pairs. */
  stateKey(state: S): string;
}

export interface CheckResult {
  ok: boolean;
  /** When not ok: the index (in the partition) of the first history that is not linearizable. */
  failedPartition?: number;
  /** False if the search gave up after stepsMax steps (then ok is true but unproven). */
  complete: boolean;
}

interface Node<I, O> {
  op: Operation<I, O> | undefined; // undefined for the list head
  id: number;
  isCall: boolean;
  match: Node<I, O> | undefined; // the call's return node
  prev: Node<I, O> | undefined;
  next: Node<I, O> | undefined;
}

/** Checks a history against a model; every partition must be linearizable. */
export function checkOperations<S, I, O>(model: Model<S, I, O>, ops: Operation<I, O>[], stepsMax = 5_000_000): CheckResult {
  const partitions = model.partition ? model.partition(ops) : [ops];
  let complete = true;
  for (let p = 0; p < partitions.length; p++) {
    const result = checkPartition(model, partitions[p], stepsMax);
    if (result === 'unknown') complete = false;
    else if (!result) return { ok: false, failedPartition: p, complete: true };
  }
  return { ok: true, complete };
}

/** Builds the doubly linked list of call and return events, ordered by time (calls before returns on ties). */
function buildList<I, O>(ops: Operation<I, O>[]): Node<I, O> {
  type Ev = { time: number; isCall: boolean; id: number };
  const events: Ev[] = [];
  ops.forEach((op, id) => {
    events.push({ time: op.call, isCall: true, id });
    events.push({ time: op.ret, isCall: false, id });
  });
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1));
  const head: Node<I, O> = { op: undefined, id: -1, isCall: false, match: undefined, prev: undefined, next: undefined };
  const returns = new Map<number, Node<I, O>>();
  const nodes: Node<I, O>[] = [];
  for (const ev of events) {
    const node: Node<I, O> = { op: ops[ev.id], id: ev.id, isCall: ev.isCall, match: undefined, prev: undefined, next: undefined };
    if (!ev.isCall) returns.set(ev.id, node);
    nodes.push(node);
  }
  let last = head;
  for (const node of nodes) {
    if (node.isCall) node.match = returns.get(node.id);
    last.next = node;
    node.prev = last;
    last = node;
  }
  return head;
}

function lift<I, O>(call: Node<I, O>): void {
  // Remove the call and its matching return from the list.
  call.prev!.next = call.next;
  if (call.next) call.next.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

function unlift<I, O>(call: Node<I, O>): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  if (call.next) call.next.prev = call;
}

function checkPartition<S, I, O>(model: Model<S, I, O>, ops: Operation<I, O>[], stepsMax: number): boolean | 'unknown' {
  if (ops.length === 0) return true;
  const head = buildList(ops);
  const linearized = new Uint8Array(ops.length);
  const memo = new Set<string>();
  const stack: { call: Node<I, O>; state: S }[] = [];
  let state = model.init();
  let entry = head.next;
  let steps = 0;
  while (head.next !== undefined) {
    if (++steps > stepsMax) return 'unknown';
    if (entry === undefined) return false;
    if (entry.isCall) {
      const result = model.step(state, entry.op!.input, entry.op!.output);
      if (result.ok) {
        linearized[entry.id] = 1;
        const key = `${bitsKey(linearized)}#${model.stateKey(result.state)}`;
        if (!memo.has(key)) {
          memo.add(key);
          stack.push({ call: entry, state });
          state = result.state;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized[entry.id] = 0;
      }
      entry = entry.next;
    } else {
      // A return whose call is not linearized yet: this path fails; backtrack.
      const top = stack.pop();
      if (top === undefined) return false;
      state = top.state;
      linearized[top.call.id] = 0;
      unlift(top.call);
      entry = top.call.next;
    }
  }
  return true;
}

function bitsKey(bits: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bits.length; i += 16) {
    let word = 0;
    for (let j = i; j < Math.min(i + 16, bits.length); j++) word = (word << 1) | bits[j];
    out += String.fromCharCode(word + 1);
  }
  return out;
}

// ---- a key-value register model --------------------------------------------------------------

export type KvInput = { kind: 'put'; key: string; value: string } | { kind: 'get'; key: string };
/** A get's output is the value read (null if absent); a put's output is ignored. */
export type KvOutput = string | null;

export const kvModel: Model<string | null, KvInput, KvOutput> = {
  init: () => null,
  step(state, input, output) {
    if (input.kind === 'put') return { ok: true, state: input.value };
    return { ok: output === state, state };
  },
  partition(ops) {
    const byKey = new Map<string, Operation<KvInput, KvOutput>[]>();
    for (const op of ops) {
      const list = byKey.get(op.input.key) ?? [];
      list.push(op);
      byKey.set(op.input.key, list);
    }
    return [...byKey.keys()].sort().map((k) => byKey.get(k)!);
  },
  stateKey: (state) => (state === null ? '\u0000' : state),
};
