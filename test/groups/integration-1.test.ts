// One test process for the files of the group "integration-1" (test/helpers/test-groups.ts says why).
import { runGroup } from '../helpers/test-groups.js'

await runGroup('integration-1', import.meta.url)
