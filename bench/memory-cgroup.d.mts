export interface MemoryCgroup {
  dir: string
  limitMiB: number
  wrap: (command: string, args: string[]) => [string, string[]]
  remove: () => void
}
export function podMemoryLimitMiB (): number
export function createMemoryCgroup (limitMiB: number): MemoryCgroup | undefined
