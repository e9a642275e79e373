import { MemoryLog } from '../../src/eventlog';
import { logContract } from './log-contract';

logContract('MemoryLog', () => ({ open: () => new MemoryLog(), cleanup: () => undefined }));
