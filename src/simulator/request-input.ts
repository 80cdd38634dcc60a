// Small validators for JSON request bodies and path parameters: each returns the value or a problem a client can act
// on.

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string }

export function ok<T> (value: T): Parsed<T> {
  return { ok: true, value }
}

export function problem<T> (message: string): Parsed<T> {
  return { ok: false, problem: message }
}

export function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Reads a string field of a JSON object body; `undefined` when the body is not an object or the field not a string. */
export function stringField (body: unknown, name: string): string | undefined {
  if (!isRecord(body)) return undefined
  const value = body[name]
  return typeof value === 'string' ? value : undefined
}

/** A path parameter holding a whole number from 0 to `max` (decimal digits only). */
export function boundedWholeNumber (text: string, max: number): number | undefined {
  if (!/^\d{1,16}$/.test(text)) return undefined
  const value = Number(text)
  return value <= max ? value : undefined
}
