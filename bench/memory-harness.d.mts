export const RSS_TARGET_MIB: number
export function imageMemoryEnv (): Record<string, string>
export function rssMiB (pid: number): number
export function watchRss (pid: number): () => number
export function startSlowUpstream (): Promise<{ url: string, close: () => void }>
export interface MemoryCgroup {
  dir: string
  limitMiB: number
  wrap: (command: string, args: string[]) => [string, string[]]
  remove: () => void
}
export function podMemoryLimitMiB (): number
export function createMemoryCgroup (limitMiB: number): MemoryCgroup | undefined
