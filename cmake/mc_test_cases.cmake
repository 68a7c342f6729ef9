# mc_test_cases.cmake: registers every C test case with ctest, as
# "<program>.<case>" running "<program> <case>". Included by ctest (through
# the TEST_INCLUDE_FILES of CMakeLists.txt) each time it runs, so the list
# is always the programs' own: each program prints its cases with --list
# (tests/c/harness.h). A program that cannot list its cases becomes one
# failing test "<program>.LIST_FAILED" instead of silently running nothing.
#
# Set before inclusion: MC_CASE_PROGRAMS ("name=path;..."), MC_CASE_TIMEOUT.
foreach(_entry IN LISTS MC_CASE_PROGRAMS)
  string(FIND "${_entry}" "=" _eq)
  string(SUBSTRING "${_entry}" 0 ${_eq} _prog)
  math(EXPR _eq "${_eq} + 1")
  string(SUBSTRING "${_entry}" ${_eq} -1 _path)
  execute_process(COMMAND "${_path}" --list
                  OUTPUT_VARIABLE _out RESULT_VARIABLE _rc ERROR_VARIABLE _err
                  TIMEOUT 60)
  if(NOT _rc EQUAL 0 OR _out STREQUAL "")
    # The runner refuses an unknown case name (exit 2), so this fails.
    message(WARNING "${_path} --list: exit ${_rc}: ${_err}")
    add_test("${_prog}.LIST_FAILED" "${_path}" "LIST_FAILED")
    continue()
  endif()
  string(REGEX REPLACE "\n$" "" _out "${_out}")
  string(REPLACE "\n" ";" _cases "${_out}")
  foreach(_case IN LISTS _cases)
    add_test("${_prog}.${_case}" "${_path}" "${_case}")
    set_tests_properties("${_prog}.${_case}" PROPERTIES TIMEOUT ${MC_CASE_TIMEOUT})
  endforeach()
endforeach()
