// One test process for the files of the group "unit" (test/helpers/test-groups.ts says why).
import { runGroup } from '../helpers/test-groups.js'

await runGroup('unit', import.meta.url)
