// Configuration errors that name the setting at fault, so start-up can print one actionable line.

export class ConfigError extends Error {
  override readonly name = 'ConfigError'

  constructor (
    /** The environment variable (or file) an operator has to fix. */
    readonly setting: string,
    readonly problem: string
  ) {
    super(`${setting}: ${problem}`)
  }
}
