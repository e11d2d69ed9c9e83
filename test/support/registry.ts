import { expect } from 'vitest';
import { RegistryError } from '../../src/control/registry';

/** Awaits a promise that must reject with a RegistryError, and returns that error. */
export async function rejection(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(RegistryError);
    return e as RegistryError;
  }
  throw new Error('expected a rejection');
}
