import { native } from './native';

/**
 * Gives the CPU to any task woken on it (sched_yield(2)) and returns when the scheduler picks
 * this thread again: at once if nothing else is runnable here.
 */
export function yieldCpu(): void {
  native.schedYield();
}
