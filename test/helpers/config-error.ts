// Runs code expected to throw a ConfigError and returns it, or fails the test if it did not.

import { ConfigError } from '../../src/config/errors.js'

export function configErrorOf (fn: () => unknown, what = 'the configuration'): ConfigError {
  try {
    fn()
  } catch (error) {
    if (error instanceof ConfigError) return error
    throw error
  }
  throw new Error(`expected a ConfigError, but ${what} was accepted`)
}

/** Everything a ConfigError could print, to search for leaked secrets. */
export function printed (error: ConfigError): string {
  return `${error.message}\n${error.setting}\n${error.problem}\n${String(error)}\n${error.stack ?? ''}`
}
